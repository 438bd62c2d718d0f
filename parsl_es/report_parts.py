"""What the campaign report and a chain's report both draw on: the ledger's rows
collected for pictures, the job report's sections, and the page's HTML pieces.

``report`` builds a single-step campaign's page, ``report_chain`` a chain's;
both from these.
"""

from __future__ import annotations

import html
import json
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from parsl_es.ledger import AttemptRow, Ledger, RangeRow
from parsl_es.ranges import RangePlan, seed_rule
from parsl_es.records import MergeRecord
from parsl_es.states import MergeState

#: Packages whose versions go into the job report.
SOFTWARE = ("parsl-es", "parsl", "numpy", "awkward", "uproot", "hist", "pythia8mc", "torch")


@dataclass
class Timeline:
    """Bars per worker: (start, duration, kind)."""

    bars: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    node_type: dict[str, str] = field(default_factory=dict)

    def add(self, worker: str | None, start: float | None, end: float | None, kind: str) -> None:
        if worker and start and end and end >= start:
            self.bars.setdefault(worker, []).append((start, end - start, kind))

    def t0(self) -> float:
        return min((s for bars in self.bars.values() for s, _, _ in bars), default=0.0)

    def idle(self) -> dict[str, float]:
        """Per worker: the share of its span (first bar to last) not covered by any bar."""
        out = {}
        for worker, bars in self.bars.items():
            spans = sorted((s, s + d) for s, d, _ in bars)
            start, end = spans[0][0], max(e for _, e in spans)
            busy, cursor = 0.0, start
            for s, e in spans:
                s = max(s, cursor)
                if e > s:
                    busy += e - s
                    cursor = e
            out[worker] = 1.0 - busy / (end - start) if end > start else 0.0
        return out


def collect(ledger: Ledger, done: str = "done") -> tuple[Timeline, dict[str, Any]]:
    """The timeline and the figures the report shows, from the ledger's report rows.

    ``done`` is the kind of a range's bar (a chain's step gives its own).
    """
    rows = ledger.report_rows()
    tl = Timeline()
    first_of_task: dict[int, float] = {}
    for r in rows.ranges:
        tl.add(r.worker, r.started, r.finished, done)
        if r.worker:
            tl.node_type.setdefault(r.worker, r.node_type or "?")
        if r.task is not None and r.started is not None:
            first_of_task.setdefault(r.task, r.started)
    # A transform's every start is an initialisation bar; a worker without transforms
    # shows the payload's own set-up, paid by its first task.
    with_transforms = {t.worker for t in rows.transforms}
    for t in rows.transforms:
        end = t.started + (t.init_seconds if t.init_seconds is not None else 0.0)
        tl.add(t.worker, t.started, end, "init")
    for t in rows.tasks:
        if t.task in first_of_task and t.setup and t.worker not in with_transforms:
            tl.add(t.worker, first_of_task[t.task] - t.setup, first_of_task[t.task], "init")
    for a in rows.attempts:
        tl.add(a.worker, a.started, a.finished, a.outcome.value)
    for run in rows.merge_runs:
        tl.add(run.worker, run.started, run.finished, "merge")
    for run in rows.validation_runs:
        tl.add(run.worker, run.started, run.finished, "validation")
    figures = {
        "ranges": rows.ranges,
        "attempts": rows.attempts,
        "merges": rows.merges,
        "durations": _durations(rows.ranges),
    }
    return tl, figures


def _durations(rows: Sequence[RangeRow]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        if r.started and r.finished:
            out.setdefault(r.node_type or "?", []).append(r.finished - r.started)
    return out


# --- the job report -------------------------------------------------------------------------


def seeds_section(campaign_seed: int) -> dict[str, Any]:
    """The job report's ``seeds``: the campaign seed and the rule the code derives seeds by."""
    return {"campaign": campaign_seed, **seed_rule()}


def plan_inputs(plan: RangePlan) -> dict[str, int]:
    return {
        "events": plan.events,
        "first_event": plan.first_event,
        "events_per_range": plan.events_per_range,
        "events_per_merge": plan.events_per_merge,
    }


def outputs_section(
    plan: RangePlan, merges: Sequence[MergeRecord], prefix: str = ""
) -> list[dict[str, Any]]:
    """The merged files written (paths relative to the output, a chain's under its step)."""
    return [
        {
            "file": prefix + str(m.output),
            "merge_group": m.group,
            "events": m.n_events,
            "first_event": plan.group(m.group).first_event,
            "last_event": plan.group(m.group).last_event,
            "adler32": m.checksum,
            "size": m.size,
            "validation": None if m.validation is None else m.validation.value,
        }
        for m in merges
        if m.state is MergeState.DONE
    ]


def events_merged(merges: Sequence[MergeRecord]) -> int:
    return sum(m.n_events or 0 for m in merges if m.state is MergeState.DONE)


def validation_section(validation_dir: Path) -> dict[str, Any] | None:
    """The campaign validation's verdict, from its ``campaign.json``."""
    path = validation_dir / "campaign.json"
    if not path.is_file():
        return None
    validation = json.loads(path.read_text())
    keys = ("passed", "problems", "events_found", "events_missing", "events_duplicated")
    return {k: validation.get(k) for k in (*keys, "event_check")}


def environment(output: Path) -> dict[str, Any]:
    """The job report's tail: software versions, host, the driver's runs, when written."""
    versions = {}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    runs = [json.loads(p.read_text()) for p in sorted((output / "logs").glob("run-*.json"))]
    return {
        "software": {"python": platform.python_version(), **versions},
        "host": platform.node(),
        "runs": runs,
        "written": time.time(),
    }


# --- the page ---------------------------------------------------------------------------------


#: The report's own figures (``NAME.png``), in page order; the validation's physics
#: pictures are copied beside them as ``physics-NAME.png``.
FIGURES = ("timeline", "throughput", "durations", "failures")
PHYSICS_PREFIX = "physics-"


def copy_physics(validation_dir: Path, dest: Path, prefix: str) -> list[str]:
    """The validation's physics pictures, copied beside the page as ``PREFIXNAME.png``."""
    physics = []
    for png in sorted(validation_dir.glob("*.png")):
        shutil.copyfile(png, dest / f"{prefix}{png.name}")
        physics.append(f"{prefix}{png.name}")
    return physics


def transform_html(per_worker: dict[str, dict[str, float]]) -> str:
    """Service mode: each worker's transform starts, restarts and initialisation time."""
    if not per_worker:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(worker)}</td><td>{row['starts']:.0f}</td><td>{row['restarts']:.0f}</td>"
        f"<td>{row['init_seconds']:.1f}</td><td>{row['mean_init_seconds']:.1f}</td></tr>"
        for worker, row in per_worker.items()
    )
    return (
        "<h2>Transforms (service mode)</h2>\n<table><tr><th>worker</th><th>starts</th>"
        "<th>restarts</th><th>initialisation (s)</th><th>per start (s)</th></tr>\n"
        f"{rows}</table>"
    )


def output_rows(outputs: list[dict[str, Any]]) -> str:
    e = html.escape
    return "".join(
        f"<tr><td>{e(str(o['file']))}</td><td>{o['events']}</td><td>{o['first_event']}"
        f"-{o['last_event']}</td><td><code>{e(str(o['adler32']))}</code></td>"
        f"<td>{e(str(o['validation']))}</td></tr>"
        for o in outputs
    )


def failure_rows(attempts: Sequence[AttemptRow]) -> str:
    e = html.escape
    return "".join(
        f"<tr><td>{a.index}</td><td>{a.attempt}</td><td>{e(a.outcome.value)}</td>"
        f"<td>{e(str(a.node_type))}</td><td>{e((a.error or '')[:160])}</td></tr>"
        for a in attempts[:50]
    )


def figures_html(images: dict[str, str]) -> str:
    e = html.escape
    return "".join(
        f'<figure><img src="{e(src)}" alt="{e(key)}"><figcaption>{e(key)}</figcaption></figure>'
        for key, src in images.items()
    )


def physics_html(physics: list[str]) -> str:
    e = html.escape
    return "".join(f'<img class="physics" src="{e(src)}" alt="{e(src)}">' for src in physics)


def verdict_text(validation: dict[str, Any] | None) -> str:
    return {True: "passed", False: "FAILED", None: "not yet run"}[(validation or {}).get("passed")]


def page_html(title: str, body: str) -> str:
    """The page around a report's body: style, and a script that counts loaded images."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>parsl-es report: {html.escape(title)}</title>
<style>
 body {{ font-family: sans-serif; margin: 1.5em; max-width: 1200px; }}
 img {{ max-width: 100%; border: 1px solid #ddd; }}
 img.physics {{ width: 32%; }}
 table {{ border-collapse: collapse; font-size: 0.85em; }}
 td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
 figure {{ margin: 1em 0; }}
</style></head>
<body>
{body}
<script>
 window.addEventListener("load", () => {{
   const imgs = Array.from(document.images);
   document.body.dataset.images = imgs.length;
   document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
 }});
</script>
</body></html>
"""
