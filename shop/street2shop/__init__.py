"""Street2Shop dataset code that needs no Django: reading it, downloading its photos, drawing a demo set.

The web app (``shop.services``, the management commands) wraps these modules; nothing here imports
Django or any other part of ``shop`` (tests/test_import_boundaries.py checks it), so they also run
in benchmarks and scripts. Import from the modules themselves:

- ``metadata``: the JSON metadata (pairs with boxes, retrieval, demo products) and photo file names.
- ``photos_txt``: ``photos.txt``, one ``<id>,<url>`` line per photo.
- ``jobs``: what a download is given and gives back (jobs, results, outcomes, limits).
- ``fetch``: one photo's HTTP request, with its address checks, redirects and body limits.
- ``scheduler``: which photo starts next, host by host, and which hosts are given up.
- ``download``: ``download_photos``, a run over many photos into one folder.
- ``reports``: CSV lists of failed photos, safe to open in a spreadsheet.
- ``progress``: the terminal progress line (count, rate, ETA) every dataset command prints.
- ``demo``: the synthetic demo catalogue, drawn and written in Street2Shop's layout.
"""
