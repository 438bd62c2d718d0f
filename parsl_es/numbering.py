"""Which event numbers a merge group must hold, whatever its step reads.

A campaign that makes its events numbers them itself: group ``g`` holds the
contiguous numbers ``first_event..last_event``. A chain that starts from a
dataset keeps the dataset's own numbers through every step, in the dataset's
order: a group's numbers are those of the dataset file holding its positions,
read back from that file (a group never spans two files, at any step).
"""

from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

import numpy as np

from parsl_es.dataset_plan import DatasetPlan
from parsl_es.ranges import MergeGroup, RangePlan


def expected_numbers(plan: RangePlan | DatasetPlan, group: MergeGroup) -> np.ndarray:
    """The event numbers group ``group`` of ``plan`` must hold, in order."""
    if not isinstance(plan, DatasetPlan):
        return np.arange(group.first_event, group.last_event + 1, dtype=np.int64)
    files = plan.dataset
    starts = list(accumulate((f.n_events for f in files), initial=0))
    f = bisect_right(starts, group.first_event) - 1
    offset = group.first_event - starts[f]
    numbers = _numbers(files[f].path, plan.format, files[f].size, files[f].checksum)
    return numbers[offset : offset + group.n_events]


@lru_cache(maxsize=4)
def _numbers(path: str, fmt: str, size: int, checksum: str) -> np.ndarray:
    """A dataset file's event numbers (kept for a few files: groups come file by file)."""
    from parsl_es.datasets import reader_for

    read = reader_for(fmt, source=path, field="format", line=None)
    return np.asarray(read(Path(path)), dtype=np.int64)
