"""A deterministic synthetic dress catalogue laid out exactly like Street2Shop (Pillow and numpy only).

The real Street2Shop photos cannot be downloaded here, so the shop ships this generator as its
offline default catalogue: studio "shop" photos of drawn dresses and noisy "street" photos of a
figure wearing the same dress, with bounding boxes, in Street2Shop's own files and JSON format.
Products come in small families (same cut in another colour, same colour in another pattern) so
that retrieval has near-duplicates to get wrong.

Every photo is drawn from its own random generator seeded by ``(seed, photo id)``, so the same seed
gives byte-identical files whatever the order or process the photos are rendered in (for the same
numpy and Pillow/libjpeg versions).

- ``plan``: products, families, ids, splits and the list of photos to draw.
- ``draw``: a dress, alone or worn by a figure, on a transparent canvas.
- ``photos``: shop and street photos with their boxes, as JPEG bytes.
- ``dataset``: ``generate_dataset``, the folder with photos, photos.txt and the JSON metadata.
"""
