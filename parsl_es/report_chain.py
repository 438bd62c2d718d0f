"""A chain campaign's report: the single-step report's figures and tables per step.

One page: a worker timeline where each step's ranges have the step's colour, a
lane per step over time (``steps.png``: streaming shows as overlapping lanes),
a table of when each step's ranges ran, and then per step its throughput,
durations, failures, physics, merged outputs and failed attempts. The job report
has a section per step (inputs, seeds, outputs, validation). Figures of a step
are ``STEP-NAME.png``; its physics pictures ``physics-STEP-NAME.png``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.ledger import Ledger, Summary
from parsl_es.report_parts import (
    PHYSICS_PREFIX,
    Timeline,
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
from parsl_es.report_plots import (
    COLOURS,
    STEP_COLOURS,
    plot_durations,
    plot_failures,
    plot_step_lanes,
    plot_throughput,
    plot_timeline,
)

#: A step's own figures (``STEP-NAME.png``), in page order.
STEP_FIGURES = ("throughput", "durations", "failures")


def step_kind(step: str) -> str:
    """The timeline kind of a step's range bars (a space: no step name has one)."""
    return f"step {step}"


def build_chain_report(ledger: Ledger, output: Path, dest: Path) -> Path:
    """Write a chain's ``index.html``, its PNGs and ``jobReport.json``; return the page."""
    tl = Timeline()
    steps: dict[str, dict[str, Any]] = {}
    for name, part in ledger.steps():
        assert name is not None
        step_tl, fig = collect(part, done=step_kind(name))
        for worker, bars in step_tl.bars.items():  # shared rows (transforms) come once
            known = tl.bars.setdefault(worker, [])
            known.extend(b for b in bars if b not in known)
        for worker, nt in step_tl.node_type.items():
            tl.node_type.setdefault(worker, nt)
        steps[name] = {"fig": fig, "summary": part.summary(), "plan": part.plan}
    t0 = tl.t0()
    names = list(steps)
    colours = {k: v for k, v in COLOURS.items() if k != "done"}
    for i, name in enumerate(names):
        colours[step_kind(name)] = STEP_COLOURS[i % len(STEP_COLOURS)]
    labels = {step_kind(name): f"{name} ranges" for name in names}
    images = {
        "timeline": plot_timeline(tl, dest / "timeline.png", colours, labels),
        "steps": plot_step_lanes(_lanes(steps), t0, dest / "steps.png"),
    }
    for name, step in steps.items():
        fig = step["fig"]
        step["images"] = {
            f"{name}: throughput": plot_throughput(
                fig["ranges"], t0, dest / f"{name}-throughput.png"
            ),
            f"{name}: durations": plot_durations(fig["durations"], dest / f"{name}-durations.png"),
            f"{name}: failures": plot_failures(fig["attempts"], dest / f"{name}-failures.png"),
        }
        step["physics"] = copy_physics(
            output / name / "validation", dest, f"{PHYSICS_PREFIX}{name}-"
        )
    jr = chain_job_report(ledger, output, steps)
    fileio.write_text_atomic(dest / "jobReport.json", json.dumps(jr, indent=1, default=str))
    page = _html(jr, steps, images, tl, t0)
    fileio.write_text_atomic(dest / "index.html", page)
    return dest / "index.html"


def _lanes(steps: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per step: its ranges' and merges' (start, duration)."""
    lanes = {}
    for name, step in steps.items():
        fig = step["fig"]
        lanes[name] = {
            "ranges": [
                (r.started, r.finished - r.started)
                for r in fig["ranges"]
                if r.started and r.finished
            ],
            "merges": [
                (m.started, m.finished - m.started)
                for m in fig["merges"]
                if m.started and m.finished
            ],
        }
    return lanes


def step_spans(steps: dict[str, dict[str, Any]], t0: float) -> dict[str, tuple[float, float]]:
    """When each step's ranges ran: first start and last end, in seconds since ``t0``."""
    spans = {}
    for name, step in steps.items():
        ranges = [r for r in step["fig"]["ranges"] if r.started and r.finished]
        if ranges:
            spans[name] = (
                min(r.started for r in ranges) - t0,
                max(r.finished for r in ranges) - t0,
            )
    return spans


def chain_job_report(
    ledger: Ledger, output: Path, steps: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Provenance of a chain: the campaign, then per step its inputs, outputs and checks."""
    spec = ledger.campaign_json()
    sections = {}
    for name, step in steps.items():
        plan, merges = step["plan"], step["fig"]["merges"]
        chain_step = spec["chain"][name]
        source = chain_step.get("input")
        sections[name] = {
            "inputs": {
                "payload": chain_step["payload"],
                "input": source,
                **plan_inputs(plan),
            },
            "seeds": seeds_section(plan.seed),
            "outputs": outputs_section(plan, merges, prefix=f"{name}/"),
            "events_merged": events_merged(merges),
            "validation": validation_section(output / name / "validation"),
        }
    verdicts = [s["validation"] for s in sections.values()]
    return {
        "campaign": spec,
        "site": ledger.meta("site"),
        "created": float(ledger.meta("created") or 0),
        "chain": list(sections),
        "steps": sections,
        "validation": {
            "passed": None
            if any(v is None for v in verdicts)
            else all(v["passed"] for v in verdicts)
        },
        **environment(output),
    }


def _step_html(name: str, step: dict[str, Any], section: dict[str, Any]) -> str:
    e = html.escape
    s: Summary = step["summary"]
    source = section["inputs"]["input"]
    reads = f"reads the merged files of step {e(source)}" if source else "makes its own events"
    fails = failure_rows(step["fig"]["attempts"])
    phys = physics_html(step["physics"])
    return f"""<h2 id="step-{e(name)}">Step {e(name)}</h2>
<p>Payload {e(str(section["inputs"]["payload"].get("name")))}, {reads}.
{s.events_done}/{s.events_total} events done, {s.events_merged} merged in
{s.merges.get("done", 0)}/{s.n_merges} files; validation:
<b>{verdict_text(section["validation"])}</b>.</p>
{figures_html(step["images"])}
<h3>Physics of step {e(name)}</h3>
<div>{phys or "<p>No validation histograms yet.</p>"}</div>
<h3>Merged outputs of step {e(name)}</h3>
<table><tr><th>file</th><th>events</th><th>event numbers</th><th>adler32</th>
<th>validation</th></tr>
{output_rows(section["outputs"])}</table>
<h3>Attempts of step {e(name)} that did not succeed</h3>
<table><tr><th>range</th><th>attempt</th><th>outcome</th><th>node type</th><th>error</th></tr>
{fails or '<tr><td colspan="5">none</td></tr>'}</table>"""


def _html(
    jr: dict[str, Any],
    steps: dict[str, dict[str, Any]],
    images: dict[str, str],
    tl: Timeline,
    t0: float,
) -> str:
    e = html.escape
    name = jr["campaign"]["name"]
    idle = tl.idle()
    mean_idle = sum(idle.values()) / len(idle) if idle else 0.0
    spans = step_spans(steps, t0)
    rows = "".join(
        f'<tr class="step-span" data-step="{e(step)}"><td><a href="#step-{e(step)}">{e(step)}'
        f"</a></td><td>{s['summary'].events_done}/{s['summary'].events_total}</td>"
        f"<td>{verdict_text(jr['steps'][step]['validation'])}</td>"
        + (
            f"<td>{spans[step][0]:.1f}</td><td>{spans[step][1]:.1f}</td>"
            if step in spans
            else "<td>-</td><td>-</td>"
        )
        + "</tr>"
        for step, s in steps.items()
    )
    # service mode: the transforms table is shared by the steps (any step's summary has it)
    transforms = transform_html(next(iter(steps.values()))["summary"].transforms)
    sections = "\n".join(_step_html(step, s, jr["steps"][step]) for step, s in steps.items())
    body = f"""<h1>Campaign {e(name)}: a chain of {len(steps)} steps</h1>
<p>Steps {e(" -> ".join(steps))}; chain validation: <b>{verdict_text(jr["validation"])}</b>.
Site {e(str(jr.get("site")))}. Workers idle on average {mean_idle:.1%} of their time between
their first and last bar.</p>
<table><tr><th>step</th><th>events done</th><th>validation</th>
<th>first range started (s)</th><th>last range finished (s)</th></tr>
{rows}</table>
{figures_html(images)}
{sections}
{transforms}
<p>Provenance: <a href="jobReport.json">jobReport.json</a>
(software: {e(", ".join(f"{k} {v}" for k, v in jr["software"].items()))}).</p>"""
    return page_html(name, body)
