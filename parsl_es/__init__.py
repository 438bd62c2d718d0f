"""parsl-es: event-service pipelines for high-energy physics on Parsl.

Names are imported when first used: every Parsl worker imports this package, and
a campaign's thousands of workers should not each pay for the campaign-file
machinery they never touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "submit": "parsl_es.notebook",
    "run_campaign": "parsl_es.api",
    "resume_campaign": "parsl_es.api",
    "CampaignSpec": "parsl_es.campaign",
    "campaign_from_dict": "parsl_es.campaign",
    "load_campaign": "parsl_es.campaign",
    "UserError": "parsl_es.errors",
    "RunResult": "parsl_es.engine.result",
    "RunStatus": "parsl_es.engine.result",
}

__all__ = [
    "CampaignSpec",
    "RunResult",
    "RunStatus",
    "UserError",
    "__version__",
    "campaign_from_dict",
    "load_campaign",
    "resume_campaign",
    "run_campaign",
    "submit",
]

if TYPE_CHECKING:
    from parsl_es.api import resume_campaign, run_campaign
    from parsl_es.campaign import CampaignSpec, campaign_from_dict, load_campaign
    from parsl_es.engine.result import RunResult, RunStatus
    from parsl_es.errors import UserError
    from parsl_es.notebook import submit


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'parsl_es' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
