"""Example campaigns shipped with parsl-es (``es-run submit demo``)."""
