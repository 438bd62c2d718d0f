"""``es-run validate``: the campaign validation, run here rather than on a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsl_es.apps import worker_payload
from parsl_es.campaign import CampaignSpec
from parsl_es.lock import campaign_lock
from parsl_es.records import CampaignVerdict
from parsl_es.validation import validate_campaign_outputs


def validate_output(output: str | Path) -> dict[str, Any]:
    """Validate every merged file; mark damaged ones in the ledger for ``es-run resume``."""
    from parsl_es.run import open_campaign

    out = Path(output)
    open_campaign(out, readonly=True).close()  # a campaign is there; nothing written yet
    with campaign_lock(out, "validate"):
        ledger = open_campaign(out)  # read-write only under the lock
        try:
            spec = CampaignSpec.model_validate(ledger.campaign_json())
            payload, _ = worker_payload(spec.payload.name, spec.payload.params, setup=False)
            report = validate_campaign_outputs(payload, ledger.plan, out, ledger.merge_records())
            ledger.record_campaign_verdict(  # damaged merged files are redone by resume
                CampaignVerdict(
                    passed=report["passed"],
                    problems=tuple(report["problems"]),
                    bad_groups=report["bad_groups"],
                    report=report,
                )
            )
        finally:
            ledger.close()
    return report
