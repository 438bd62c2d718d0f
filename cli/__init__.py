"""The ``es-run`` command line (installed as ``parsl_es.cli``)."""
