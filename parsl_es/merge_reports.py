"""Where each merge group's validation report is kept, and which of them exist.

Read by the campaign-wide validation and by the campaign's plots: a campaign may
have a hundred thousand merge groups, so the reports present are found with one
directory listing, not a look-up per group.
"""

from __future__ import annotations

import os
from pathlib import Path

VALIDATION_DIR = "validation"


def merge_report_name(group: int) -> str:
    return f"merge-{group:06d}.json"


def merge_report_path(output_dir: Path, group: int) -> Path:
    return output_dir / VALIDATION_DIR / merge_report_name(group)


def existing_merge_reports(output_dir: Path, n_merges: int) -> list[tuple[int, Path]]:
    """The merge groups' reports that exist, by group: one directory listing, not a
    look-up per group (a campaign may have a hundred thousand)."""
    directory = output_dir / VALIDATION_DIR
    if not directory.is_dir():
        return []
    present = {entry.name for entry in os.scandir(directory)}
    names = ((g, merge_report_name(g)) for g in range(n_merges))
    return [(g, directory / name) for g, name in names if name in present]
