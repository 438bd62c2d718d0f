"""The report's pictures: worker timelines, a lane per chain step, throughput, durations, failures.

Each function draws one PNG with matplotlib (Agg) and returns the file's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parsl_es import fileio
from parsl_es.ledger import AttemptRow, RangeRow

if TYPE_CHECKING:
    from parsl_es.report_parts import Timeline

#: Colours of the timeline, by what a bar is.
COLOURS = {
    "init": "#9e9e9e",
    "done": "#2e7d32",
    "failed": "#c62828",
    "fatal": "#6a1b9a",
    "lost": "#ef6c00",
    "timeout": "#ad1457",
    "merge": "#1565c0",
    "validation": "#00838f",
}
#: Colours of a chain's steps, in chain order (cycled beyond ten steps).
STEP_COLOURS = (
    "#2e7d32",
    "#f9a825",
    "#6d4c41",
    "#00897b",
    "#5e35b1",
    "#d81b60",
    "#7cb342",
    "#3949ab",
    "#fb8c00",
    "#546e7a",
)

# --- pictures --------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    _pyplot().close(fig)
    return path.name


def plot_timeline(
    tl: Timeline, path: Path, colours: dict[str, str] | None = None, labels: dict | None = None
) -> str:
    """Bars per worker; a chain's ranges in their step's colour (``colours``, ``labels``)."""
    colours = colours or COLOURS
    labels = labels or {}
    plt = _pyplot()
    workers = sorted(
        tl.bars, key=lambda w: (tl.node_type.get(w, "~"), min(s for s, _, _ in tl.bars[w]))
    )
    t0 = tl.t0()
    fig, ax = plt.subplots(figsize=(11, max(2.5, 0.28 * len(workers) + 1.2)))
    for row, worker in enumerate(workers):
        by_kind: dict[str, list[tuple[float, float]]] = {}
        for start, width, kind in tl.bars[worker]:
            by_kind.setdefault(kind, []).append((start - t0, max(width, 1e-3)))
        for kind, spans in by_kind.items():
            ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours.get(kind, "black"))
    ax.set_yticks(range(len(workers)), [f"{tl.node_type.get(w, '')} {w}" for w in workers])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("seconds since the first range")
    ax.set_title("Workers over time: initialisation, event ranges and merges")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    names = [labels.get(k, k) for k in colours]
    fig.legend(handles, names, ncol=min(len(colours), 10), fontsize=7, loc="lower center")
    fig.tight_layout(rect=(0, 0.08 if len(workers) > 8 else 0.14, 1, 1))
    return _save(fig, path)


def plot_throughput(ranges: Sequence[RangeRow], t0: float, path: Path) -> str:
    plt = _pyplot()
    finished = np.array([r.finished for r in ranges if r.finished]) - t0
    events = np.array([r.n_events or 0 for r in ranges if r.finished])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if len(finished):
        bins = max(5, min(80, len(finished) // 5))
        counts, edges = np.histogram(finished, bins=bins, weights=events)
        ax.stairs(counts / np.diff(edges), edges, fill=True, alpha=0.6)
        ax.axhline(events.sum() / max(finished.max(), 1e-9), ls="--", c="k", lw=1, label="mean")
        ax.legend(fontsize=8)
    ax.set(xlabel="seconds since the first range", ylabel="events / s", title="Throughput")
    fig.tight_layout()
    return _save(fig, path)


def plot_durations(durations: dict[str, list[float]], path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    values = [v for vs in durations.values() for v in vs]
    if values:
        edges = np.histogram_bin_edges(values, bins=40)
        for nt, vs in sorted(durations.items()):
            ax.hist(vs, bins=edges, histtype="step", lw=1.5, label=f"{nt} ({len(vs)} ranges)")
        ax.legend(fontsize=8)
    ax.set(xlabel="range duration [s]", ylabel="ranges", title="Range durations per node type")
    fig.tight_layout()
    return _save(fig, path)


def plot_failures(attempts: Sequence[AttemptRow], path: Path) -> str:
    plt = _pyplot()
    counts: dict[str, int] = {}
    for a in attempts:
        counts[a.outcome.value] = counts.get(a.outcome.value, 0) + 1
    fig, ax = plt.subplots(figsize=(6, 2.8))
    kinds = ["failed", "lost", "timeout", "damaged", "fatal"]
    ax.bar(kinds, [counts.get(k, 0) for k in kinds], color=[COLOURS.get(k, "#555") for k in kinds])
    ax.set(ylabel="attempts", title="Attempts that did not succeed (then retried)")
    fig.tight_layout()
    return _save(fig, path)


def plot_step_lanes(
    lanes: dict[str, dict[str, list[tuple[float, float]]]], t0: float, path: Path
) -> str:
    """A lane per chain step: its ranges (overlapping bars darken) and, below, its merges.

    Streaming shows as lanes that overlap in time: a step's ranges run while the
    step it reads is still running.
    """
    plt = _pyplot()
    names = list(lanes)
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.7 * len(names)))
    for row, name in enumerate(names):
        colour = STEP_COLOURS[row % len(STEP_COLOURS)]
        y = len(names) - 1 - row
        ranges = [(s - t0, max(d, 1e-3)) for s, d in lanes[name].get("ranges", [])]
        merges = [(s - t0, max(d, 1e-3)) for s, d in lanes[name].get("merges", [])]
        ax.broken_barh(ranges, (y - 0.05, 0.45), facecolors=colour, alpha=0.35)
        ax.broken_barh(merges, (y - 0.4, 0.25), facecolors=COLOURS["merge"])
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_xlabel("seconds since the first range")
    ax.set_title("Chain steps over time: ranges (top of each lane) and merges (below)")
    fig.tight_layout()
    return _save(fig, path)
