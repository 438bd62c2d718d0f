"""parsl-es: event-service pipelines for high-energy physics on Parsl."""

from __future__ import annotations

__version__ = "0.1.0"

from parsl_es.campaign import CampaignSpec, campaign_from_dict, load_campaign
from parsl_es.errors import UserError

__all__ = [
    "CampaignSpec",
    "UserError",
    "__version__",
    "campaign_from_dict",
    "load_campaign",
]
