#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    # TensorFlow's C++ start-up chatter drowns the commands' own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.argv[1:2] == ["demo"]:
        # The demo is a development shop on 127.0.0.1 (the Procfile's gunicorn, media served by Django).
        os.environ.setdefault("DEBUG", "true")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:  # a missing or bad variable: one line, not a traceback
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
