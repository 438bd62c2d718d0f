"""The Globus Compute SDK client, for remote submission and for Globus Compute sites.

A leaf module: ``sites`` (a Globus Compute executor) and ``remote`` (submitting a
whole driver) both need a client, and neither should import the other for it.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

from parsl_es.errors import UserError

#: Environment variable naming a ``module:callable`` that returns the SDK client to
#: use (sites with their own authentication; the offline tests).
CLIENT_FACTORY_ENV = "PARSL_ES_COMPUTE_CLIENT"


def compute_client() -> Any:
    """The Globus Compute SDK client (or the one ``PARSL_ES_COMPUTE_CLIENT`` names)."""
    factory = os.environ.get(CLIENT_FACTORY_ENV)
    if factory:
        module, _, name = factory.partition(":")
        return getattr(import_module(module), name)()
    try:
        from globus_compute_sdk import Client
    except ImportError:
        raise UserError(
            "remote submission needs the Globus Compute SDK: pip install 'parsl-es[globus]'"
        ) from None
    return Client()
