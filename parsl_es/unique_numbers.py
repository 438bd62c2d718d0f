"""Are a dataset's event numbers unique? Answered in memory bounded by one file.

A Python set of every number of a large dataset costs ~70 bytes a number (10^8
events: 7 GB), so the check keeps numbers on disk instead:

* each file's numbers are sorted (numpy) and checked against themselves, then
  written to a temporary ``.npy`` file (8 bytes a number on disk); its smallest
  and largest numbers are kept (two integers a file);
* at the end, files whose [smallest, largest] intervals overlap are grouped
  (one sort of the intervals): files numbered in separate blocks, the usual
  dataset, overlap no other file and cost nothing more;
* the files of an overlapping group are compared window by window of values
  (a k-way check): every ``s``-th number of each file (memory-mapped) is sampled,
  at most ``SAMPLES`` in all, the windows are cut between samples so that each
  holds at most ``WINDOW`` numbers, and each window's numbers are gathered from
  all the group's files, sorted, and compared with their neighbours.

Memory (numpy, no Python object per number): the file being added (its array
and its sorted copy, 16 bytes a number), then ``SAMPLES`` samples and a window's
numbers with their file labels and order (~32 bytes x ``WINDOW``, 4 MiB); a group
of k files overlapping each other adds k x (windows + 1) positions, and windows
exceed ``WINDOW`` only when k x s does (k x numbers > ``SAMPLES`` x ``WINDOW``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

#: Numbers sampled to cut a group's windows (every s-th number of each file).
SAMPLES = 1 << 16
#: Numbers a window holds at most (while k x s stays below it).
WINDOW = 1 << 17


class UniqueNumbers:
    """Files' event numbers, added one file at a time; where a number repeats.

    A context manager: its temporary directory is removed on exit.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="parsl-es-numbers-", dir=directory)
        self._dir = Path(self._tmp.name)
        self._bounds: list[tuple[int, int]] = []

    def __enter__(self) -> UniqueNumbers:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def add(self, numbers: np.ndarray) -> int | None:
        """Add the next file's numbers (any order, at least one); a number it holds twice.

        Files are numbered 0, 1, ... in the order they are added.
        """
        ordered = np.sort(np.asarray(numbers, dtype=np.int64))
        twice = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(twice):
            return int(ordered[twice[0]])
        np.save(self._dir / f"{len(self._bounds)}.npy", ordered)
        self._bounds.append((int(ordered[0]), int(ordered[-1])))
        return None

    def clash(self) -> tuple[int, int, int] | None:
        """``(number, earlier file, later file)`` for a number in two files, else None."""
        for group in _overlapping(self._bounds):
            found = self._compare(group)
            if found is not None:
                return found
        return None

    def _compare(self, files: list[int]) -> tuple[int, int, int] | None:
        """The first number two of ``files`` share (by windows of values), else None."""
        arrays = [np.load(self._dir / f"{k}.npy", mmap_mode="r") for k in files]
        labels = np.asarray(files)
        stride = max(1, -(-sum(len(a) for a in arrays) // SAMPLES))
        samples = np.sort(np.concatenate([a[::stride] for a in arrays]))
        per_window = max(1, WINDOW // stride - len(files))
        cuts = samples[per_window::per_window]
        del samples
        # positions[f, j]: where window j starts in file f (its last column: the file's end)
        positions = np.empty((len(files), len(cuts) + 2), dtype=np.int64)
        for f, a in enumerate(arrays):
            positions[f, 0], positions[f, -1] = 0, len(a)
            positions[f, 1:-1] = np.searchsorted(a, cuts)
        for j in range(len(cuts) + 1):
            starts, ends = positions[:, j], positions[:, j + 1]
            present = np.flatnonzero(ends > starts)
            if len(present) < 2:
                continue
            values = np.concatenate([arrays[f][starts[f] : ends[f]] for f in present])
            owner = np.repeat(labels[present], (ends - starts)[present])
            order = np.argsort(values, kind="stable")
            ordered = values[order]
            same = np.flatnonzero(ordered[1:] == ordered[:-1])
            if len(same):
                a, b = owner[order[same[0]]], owner[order[same[0] + 1]]
                return int(ordered[same[0]]), int(min(a, b)), int(max(a, b))
        return None


def _overlapping(bounds: list[tuple[int, int]]) -> list[list[int]]:
    """Groups (of two files or more) of files whose number intervals overlap."""
    order = sorted(range(len(bounds)), key=lambda k: bounds[k])
    groups: list[list[int]] = []
    current: list[int] = []
    top = None
    for k in order:
        low, high = bounds[k]
        if top is not None and low <= top:
            current.append(k)
            top = max(top, high)
        else:
            if len(current) > 1:
                groups.append(current)
            current, top = [k], high
    if len(current) > 1:
        groups.append(current)
    return groups
