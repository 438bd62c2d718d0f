"""Site configurations shipped with parsl-es (``es-run sites``)."""
