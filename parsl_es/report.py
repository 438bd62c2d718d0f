"""The campaign report: an HTML page with pictures, and a job report for provenance.

Read from the ledger alone (its ``report_rows``) (it works during and after a run, and on a copy):

- a timeline per worker of payload initialisation, ranges (coloured by what came
  of them) and merges, like the AthenaMP worker pictures of the Raythena talk;
- events per second over time;
- range durations per node type;
- failed, lost, timed-out and damaged attempts;
- the physics histograms of the campaign validation;
- ``jobReport.json``: inputs, outputs with checksums and event counts, seeds,
  software versions, the driver runs.

A chain campaign's report (``report_chain``) has all of this per step, and a
lane per step over time that shows the steps streaming. The pictures are drawn
in ``report_plots``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.errors import UserError
from parsl_es.ledger import LEDGER_NAME, AttemptRow, Ledger
from parsl_es.records import MergeRecord
from parsl_es.report_parts import (
    FIGURES,
    PHYSICS_PREFIX,
    collect,
    copy_physics,
    environment,
    events_merged,
    failure_rows,
    figures_html,
    output_rows,
    outputs_section,
    page_html,
    physics_html,
    plan_inputs,
    seeds_section,
    transform_html,
    validation_section,
    verdict_text,
)
from parsl_es.report_plots import plot_durations, plot_failures, plot_throughput, plot_timeline

_transform_html = transform_html  # its name before the chain report shared it


def job_report(ledger: Ledger, output: Path, merges: Sequence[MergeRecord]) -> dict[str, Any]:
    """Provenance: what went in, what came out, with which software and seeds."""
    spec = ledger.campaign_json()
    plan = ledger.plan
    return {
        "campaign": spec,
        "site": ledger.meta("site"),
        "created": float(ledger.meta("created") or 0),
        "inputs": {"payload": spec["payload"], **plan_inputs(plan)},
        "seeds": seeds_section(plan.seed),
        "outputs": outputs_section(plan, merges),
        "events_merged": events_merged(merges),
        "validation": validation_section(output / "validation"),
        **environment(output),
    }


def build_report(output: str | Path, dest: str | Path | None = None) -> Path:
    """Write ``index.html``, its PNGs and ``jobReport.json``; return the page's path."""
    output = Path(output)
    if not (output / LEDGER_NAME).is_file():
        raise UserError("no campaign ledger here (expected ledger.sqlite)", file=output)
    dest = Path(dest) if dest else output / "report"
    dest.mkdir(parents=True, exist_ok=True)
    with Ledger.open(output / LEDGER_NAME, readonly=True) as ledger:
        if ledger.chain_steps():
            from parsl_es.report_chain import build_chain_report

            return build_chain_report(ledger, output, dest)
        tl, fig = collect(ledger)
        summary = ledger.summary()
        jr = job_report(ledger, output, fig["merges"])
    timeline, throughput, durations, failures = (dest / f"{name}.png" for name in FIGURES)
    images = {
        "timeline": plot_timeline(tl, timeline),
        "throughput": plot_throughput(fig["ranges"], tl.t0(), throughput),
        "durations": plot_durations(fig["durations"], durations),
        "failures": plot_failures(fig["attempts"], failures),
    }
    physics = copy_physics(output / "validation", dest, PHYSICS_PREFIX)
    fileio.write_text_atomic(dest / "jobReport.json", json.dumps(jr, indent=1, default=str))
    idle = tl.idle()
    page = _html(jr, summary, images, physics, idle, fig["attempts"])
    fileio.write_text_atomic(dest / "index.html", page)
    return dest / "index.html"


def _html(
    jr: dict[str, Any],
    summary: Any,
    images: dict[str, str],
    physics: list[str],
    idle: dict[str, float],
    attempts: Sequence[AttemptRow],
) -> str:
    e = html.escape
    name = jr["campaign"]["name"]
    mean_idle = sum(idle.values()) / len(idle) if idle else 0.0
    rows = output_rows(jr["outputs"])
    fails = failure_rows(attempts)
    phys = physics_html(physics)
    verdict = verdict_text(jr.get("validation"))
    transforms = transform_html(summary.transforms)
    body = f"""<h1>Campaign {e(name)}</h1>
<p>{summary.events_done}/{summary.events_total} events simulated, {summary.events_merged} merged
in {summary.merges.get("done", 0)}/{summary.n_merges} files; campaign validation: <b>{verdict}</b>.
Site {e(str(jr.get("site")))}. Workers idle on average {mean_idle:.1%} of their time between
their first and last bar.</p>
{figures_html(images)}
<h2>Physics</h2>
<div>{phys or "<p>No validation histograms yet.</p>"}</div>
<h2>Merged outputs</h2>
<table><tr><th>file</th><th>events</th><th>event numbers</th><th>adler32</th>
<th>validation</th></tr>
{rows}</table>
{transforms}
<h2>Attempts that did not succeed</h2>
<table><tr><th>range</th><th>attempt</th><th>outcome</th><th>node type</th><th>error</th></tr>
{fails or '<tr><td colspan="5">none</td></tr>'}</table>
<p>Provenance: <a href="jobReport.json">jobReport.json</a>
(software: {e(", ".join(f"{k} {v}" for k, v in jr["software"].items()))}).</p>"""
    return page_html(name, body)
