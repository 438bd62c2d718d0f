"""The campaign's physics histograms: summed over its merged files, drawn in one figure.

Each merged file's histograms are kept in its merge report as plain bin edges and
counts (``histograms_to_json``), so summing a campaign's needs no file re-read
unless a report is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from parsl_es import fileio
from parsl_es.merge_reports import VALIDATION_DIR, existing_merge_reports
from parsl_es.payloads import Payload
from parsl_es.ranges import RangePlan
from parsl_es.records import MergeRecord


def histograms_to_json(hists: dict[str, Any]) -> dict[str, Any]:
    """1-D ``hist.Hist`` objects as plain bin edges and counts (summable, readable)."""
    out = {}
    for name, h in hists.items():
        axis = h.axes[0]
        out[name] = {
            "label": axis.label or name,
            "edges": [float(x) for x in axis.edges],
            "counts": [float(x) for x in h.values()],
            "entries": float(h.sum(flow=True)),
        }
    return out


def campaign_histograms(
    payload: Payload, plan: RangePlan, output_dir: Path, merges: list[MergeRecord]
) -> list[str]:
    """Sum the merged files' physics histograms; write ``histograms.json`` and ``physics.png``.

    Separate from the exactly-once proof so the two can run side by side on two
    workers at the end of a campaign (plotting is the slower part).
    """
    by_group = {m.group: m for m in merges}
    hists = _sum_histograms(payload, plan, output_dir, by_group)
    directory = output_dir / VALIDATION_DIR
    fileio.write_text_atomic(directory / "histograms.json", json.dumps(hists))
    return _plot(hists, directory)


def _sum_histograms(
    payload: Payload, plan: RangePlan, output_dir: Path, merges: dict[int, MergeRecord]
) -> dict[str, Any]:
    total: dict[str, Any] = {}
    reports = dict(existing_merge_reports(output_dir, plan.n_merges))
    for g in range(plan.n_merges):
        hists: dict[str, Any] = {}
        if g in reports:
            hists = json.loads(reports[g].read_text()).get("histograms", {})
        elif g in merges and merges[g].output:
            path = output_dir / str(merges[g].output)
            if path.is_file():
                hists = histograms_to_json(payload.histograms(path))
        for name, h in hists.items():
            if name not in total:
                total[name] = {**h, "counts": list(h["counts"])}
            elif total[name]["edges"] == h["edges"]:
                summed = np.add(total[name]["counts"], h["counts"])
                total[name]["counts"] = summed.tolist()
                total[name]["entries"] += h["entries"]
    return total


def _plot(hists: dict[str, Any], directory: Path) -> list[str]:
    """All histograms in one figure, ``physics.png``, written atomically.

    One figure rather than one per histogram: the campaign's report timeline
    showed the plots as the last thing a campaign waits for (0.3 s a figure).
    """
    if not hists:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(hists))
    rows = -(-len(hists) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.93, wspace=0.3, hspace=0.45)
    for ax in axes.flat[len(hists) :]:
        ax.set_visible(False)
    for ax, (name, h) in zip(axes.flat, hists.items(), strict=False):
        edges = np.asarray(h["edges"])
        counts = np.asarray(h["counts"])
        ax.stairs(counts, edges, fill=True, alpha=0.6)
        if _log_spaced(edges):
            ax.set_xscale("log")
        nonzero = counts[counts > 0]
        if len(nonzero) and nonzero.max() / nonzero.min() > 1e3:
            ax.set_yscale("log")
        ax.set_xlabel(h["label"], fontsize=8)
        ax.set_ylabel("entries", fontsize=8)
        ax.set_title(f"{name} ({int(h['entries'])} entries)", fontsize=9)
        ax.tick_params(labelsize=7)
    final = directory / "physics.png"
    with fileio.atomic_path(final) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return [final.name]


def _log_spaced(edges: np.ndarray) -> bool:
    """Edges of a log-transformed axis: positive with a constant ratio."""
    if len(edges) < 3 or edges[0] <= 0:
        return False
    ratios = edges[1:] / edges[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=1e-6)) and ratios[0] > 1.0 + 1e-9
