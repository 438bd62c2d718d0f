"""``es-run validate``: the campaign validation, run here rather than on a worker.

A chain's steps are each validated on their own (each with its payload, its plan
and its ``OUTPUT/<step>``), and each verdict is recorded in that step's ledger:
a damaged merged file of one step fails that step alone, and resume redoes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsl_es.apps import worker_payload
from parsl_es.chain import ChainSpec
from parsl_es.ledger import Ledger
from parsl_es.lock import campaign_lock
from parsl_es.records import CampaignVerdict
from parsl_es.stepplan import StepPlan
from parsl_es.validation import validate_campaign_outputs


def validate_output(output: str | Path) -> dict[str, Any]:
    """Validate every merged file; mark damaged ones in the ledger for ``es-run resume``.

    A chain's report is ``{"passed", "chain", "problems", "steps": {step: report}}``
    (each problem prefixed with its step); a single-step campaign's is its report.
    """
    from parsl_es.ledger import open_campaign
    from parsl_es.run import spec_from_json

    out = Path(output)
    open_campaign(out, readonly=True).close()  # a campaign is there; nothing written yet
    with campaign_lock(out, "validate"):
        ledger = open_campaign(out)  # read-write only under the lock
        try:
            spec = spec_from_json(ledger.campaign_json())
            if not isinstance(spec, ChainSpec):
                (step,) = spec.step_plans()
                return _validate_step(ledger, step, out)
            steps = {
                step.name: _validate_step(ledger.step(step.name), step, out / step.directory)
                for step in spec.step_plans()
                if step.name is not None
            }
        finally:
            ledger.close()
    return {
        "campaign": spec.name,
        "chain": list(steps),
        "passed": all(r["passed"] for r in steps.values()),
        "problems": [f"{name}: {p}" for name, r in steps.items() for p in r["problems"]],
        "steps": steps,
    }


def _validate_step(ledger: Ledger, step: StepPlan, output_dir: Path) -> dict[str, Any]:
    """One step's (or a single-step campaign's) validation, recorded in its ledger."""
    payload, _ = worker_payload(*step.payload, setup=False)
    report = validate_campaign_outputs(payload, ledger.plan, output_dir, ledger.merge_records())
    ledger.record_campaign_verdict(  # damaged merged files are redone by resume
        CampaignVerdict(
            passed=report["passed"],
            problems=tuple(report["problems"]),
            bad_groups=report["bad_groups"],
            report=report,
        )
    )
    return report
