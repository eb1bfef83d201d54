import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
try:
    application = get_wsgi_application()
except ImproperlyConfigured as error:  # a missing variable: one line in the server's log, then stop
    sys.exit(f"error: {error}")
