"""Remote submission through Globus Compute: the whole driver runs on an endpoint.

A physicist on a laptop sends a campaign to a Globus Compute endpoint on, say, a
NERSC login or workflow node. The endpoint runs ``run_campaign_remotely``: it
loads a site of *that* machine (``perlmutter``), drives the campaign there, and
returns a summary, the job report and the timeline picture. The laptop only
submits (``es-run submit CAMPAIGN --endpoint UUID``), follows (``es-run status
TASK --endpoint``) and fetches (``es-run fetch TASK``).

The client is the Globus Compute SDK's ``Client``: it registers the function,
packs the arguments with the SDK's ``ComputeSerializer``, submits a batch and
unpacks results, exactly as any SDK user does. Both sides need the same Python
(major.minor) and parsl-es versions: the remote function checks and says so.
"""

from __future__ import annotations

import base64
import json
import platform
from pathlib import Path
from typing import Any

from parsl_es import __version__
from parsl_es.errors import UserError
from parsl_es.globus_client import compute_client


class VersionMismatch(RuntimeError):
    """The endpoint's Python or parsl-es differs from the submitter's."""


def run_campaign_remotely(
    campaign: dict[str, Any],
    output: str,
    site: str,
    overrides: list[str],
    submitter: dict[str, str],
    resume: bool = False,
) -> dict[str, Any]:
    """On the endpoint: run (or resume) a campaign with a site of this machine.

    Returns what the submitter fetches: the run's result, the ledger's summary,
    the job report and the timeline PNG (base64).
    """
    import platform as _platform
    from dataclasses import asdict
    from pathlib import Path as _Path

    from parsl_es import api
    from parsl_es.ledger import LEDGER_NAME, Ledger
    from parsl_es.remote import _minor, versions
    from parsl_es.report import build_report

    here = versions()
    if _minor(here["python"]) != _minor(submitter.get("python", "")) or here[
        "parsl_es"
    ] != submitter.get("parsl_es"):
        raise VersionMismatch(
            f"the endpoint runs Python {here['python']} and parsl-es {here['parsl_es']}, "
            f"the submitter Python {submitter.get('python')} and parsl-es "
            f"{submitter.get('parsl_es')}: install the same versions on both sides"
        )
    out = _Path(output).expanduser()
    if resume:
        prepared = api.prepare_resume(out, site=site, overrides=overrides)
    else:
        prepared = api.prepare(campaign, out, site=site, overrides=overrides)
    result = api.execute(prepared)
    ledger = Ledger.open(out / LEDGER_NAME, readonly=True)
    try:
        if ledger.chain_steps():  # a chain: each step's summary
            parts = {name: part.summary() for name, part in ledger.steps()}
            summary = {
                "chain": list(parts),
                "complete": all(s.complete for s in parts.values()),
                "steps": {name: asdict(s) | {"complete": s.complete} for name, s in parts.items()},
            }
        else:
            summary = asdict(ledger.summary())
    finally:
        ledger.close()
    page = build_report(out)
    timeline = page.parent / "timeline.png"
    return {
        "result": asdict(result),
        "summary": summary,
        "output": str(out.absolute()),
        "host": _platform.node(),
        "job_report": json.loads((page.parent / "jobReport.json").read_text()),
        "timeline_png": base64.b64encode(timeline.read_bytes()).decode(),
    }


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def versions() -> dict[str, str]:
    """This side's Python and parsl-es versions (both sides must agree)."""
    return {"python": platform.python_version(), "parsl_es": __version__}


# --- the submitting side -----------------------------------------------------------------


class RemoteCampaigns:
    """Submit campaigns to endpoints and follow them, through an SDK ``Client``."""

    def __init__(self, client: Any | None = None) -> None:
        self.client = client if client is not None else compute_client()

    def submit(
        self,
        campaign: dict[str, Any],
        endpoint: str,
        output: str,
        site: str = "local",
        overrides: list[str] | None = None,
        resume: bool = False,
    ) -> str:
        """Ship the driver to ``endpoint``; return the Globus Compute task id."""
        with _translated_errors(endpoint):
            function_id = self.client.register_function(run_campaign_remotely)
            batch = self.client.create_batch()
            batch.add(
                function_id,
                args=(campaign, output, site, overrides or [], versions()),
                kwargs={"resume": resume},
            )
            reply = self.client.batch_run(endpoint, batch)
        return reply["tasks"][function_id][0]

    def status(self, task_id: str) -> dict[str, Any]:
        """``{"pending": bool, "status": ...}``; with ``"error"`` if the task failed."""
        with _translated_errors(task_id):
            try:
                task = self.client.get_task(task_id)
            except _sdk_errors("TaskExecutionFailed") as exc:  # the remote task raised
                return {"pending": False, "status": "failed", "error": _remote_error(exc)}
        return {k: v for k, v in task.items() if k != "result"}

    def fetch(self, task_id: str, dest: str | Path) -> dict[str, Any]:
        """The finished campaign's summary; job report and timeline written into ``dest``."""
        status = self.status(task_id)
        if status.get("pending"):
            raise UserError(f"task {task_id} is still {status.get('status', 'pending')}")
        if status.get("error"):
            raise UserError(f"the remote campaign failed: {status['error']}")
        with _translated_errors(task_id):
            got = self.client.get_result(task_id)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "jobReport.json").write_text(json.dumps(got["job_report"], indent=1))
        (dest / "timeline.png").write_bytes(base64.b64decode(got["timeline_png"]))
        summary = {k: got[k] for k in ("result", "summary", "output", "host")}
        (dest / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        return summary


class _translated_errors:
    """Turn the SDK's authentication and lookup errors into one clear message."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        if exc is None or isinstance(exc, UserError):
            return False
        status = getattr(exc, "http_status", None)
        if status in (401, 403) or isinstance(exc, _sdk_errors("AuthAPIError")):
            raise UserError(
                f"Globus authentication failed ({exc}): log in with "
                "`globus-compute-endpoint login` or set GLOBUS_COMPUTE_CLIENT_ID and "
                "GLOBUS_COMPUTE_CLIENT_SECRET for a confidential client"
            ) from None
        if status == 404:
            raise UserError(f"Globus Compute knows no {self.what} ({exc})") from None
        if isinstance(exc, VersionMismatch) or "VersionMismatch" in str(exc):
            # (raised on the endpoint, it arrives as text in the remote traceback)
            raise UserError(str(exc)) from None
        return False


def _sdk_errors(name: str) -> tuple[type[BaseException], ...]:
    """The SDK's exception class of that name, when the SDK is installed (else none)."""
    try:
        import globus_sdk
        from globus_compute_sdk import errors
    except ImportError:
        return ()
    found = getattr(errors, name, None) or getattr(globus_sdk, name, None)
    return (found,) if found is not None else ()


def _remote_error(exc: BaseException) -> str:
    """The last line of a remote traceback: what went wrong over there."""
    text = str(getattr(exc, "remote_data", "") or exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
