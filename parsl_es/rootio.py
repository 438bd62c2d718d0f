"""ROOT file I/O with uproot: the ``events`` TTree that range and merged files hold.

Columns are a flat dict: a numpy array per scalar branch, and an awkward record
array (``ak.zip``) per group of jagged branches sharing one counter, written as
``n<group>`` plus ``<group>_<field>`` branches. Reading returns the same shape,
so a merge is read, concatenate, write, whatever the payload stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

TREE = "events"
#: ZSTD writes about 2.5x faster than uproot's ZLIB default at similar size.
COMPRESSION = uproot.ZSTD(1)


def write_events(path: Path, columns: Mapping[str, Any], title: str = "parsl-es events") -> None:
    """Write ``columns`` as the ``events`` TTree (the caller handles atomicity)."""
    if "event_number" not in columns:
        raise ValueError("an events tree needs an event_number column")
    types = {}
    data = {}
    for name, values in columns.items():
        if isinstance(values, ak.Array):
            types[name] = (
                values.type.content if isinstance(values.type, ak.types.ArrayType) else values.type
            )
            data[name] = values
        else:
            arr = np.asarray(values)
            types[name] = arr.dtype
            data[name] = arr
    with uproot.recreate(path, compression=COMPRESSION) as f:
        tree = f.mktree(TREE, types, title=title)
        if len(data["event_number"]):
            tree.extend(data)


def _group_of(branch: Any) -> str:
    """The column a branch belongs to: its jagged group's name, or its own."""
    return branch.name if branch.count_branch is None else branch.count_branch.name[1:]


def read_events(path: Path, filter_name: Sequence[str] | None = None) -> dict[str, Any]:
    """Read the ``events`` tree back into the column dict ``write_events`` takes.

    ``filter_name`` picks columns: scalar branches and jagged groups by name.
    """
    with uproot.open(path) as f:
        tree = f[TREE]
        counters = {b.count_branch.name for b in tree.branches if b.count_branch is not None}
        wanted = [
            b
            for b in tree.branches
            if b.name not in counters and (filter_name is None or _group_of(b) in filter_name)
        ]
        # One batched read: several times faster than branch by branch.
        arrays = tree.arrays([b.name for b in wanted], library="ak")
        groups: dict[str, dict[str, ak.Array]] = {}
        columns: dict[str, Any] = {}
        for branch in wanted:
            if branch.count_branch is not None:
                group = branch.count_branch.name[1:]
                field = branch.name[len(group) + 1 :]
                groups.setdefault(group, {})[field] = arrays[branch.name]
            else:
                columns[branch.name] = ak.to_numpy(arrays[branch.name])
        for group, fields in groups.items():
            columns[group] = ak.zip(fields)
        return columns


def merge_files(inputs: Sequence[Path], output: Path) -> int:
    """Concatenate the ``events`` trees of ``inputs`` (in the given order)."""
    if not inputs:
        raise ValueError("nothing to merge")
    parts = [read_events(p) for p in inputs]
    names = list(parts[0])
    for path, part in zip(inputs, parts, strict=True):
        if list(part) != names:
            raise ValueError(f"{path}: columns {list(part)} differ from {names}")
    merged: dict[str, Any] = {}
    for name in names:
        values = [p[name] for p in parts]
        if isinstance(values[0], ak.Array):
            merged[name] = ak.concatenate(values)
        else:
            merged[name] = np.concatenate(values)
    write_events(output, merged)
    return len(merged["event_number"])


def event_numbers(path: Path) -> np.ndarray:
    with uproot.open(path) as f:
        return f[TREE]["event_number"].array(library="np")


def count_events(path: Path) -> int:
    with uproot.open(path) as f:
        return int(f[TREE].num_entries)


def content_hash(path: Path) -> str:
    """SHA-256 of the events' values, branch by branch in name order.

    Two files with the same events hash the same whatever their compression,
    basket layout or creation time (file bytes differ between writes).
    """
    digest = hashlib.sha256()
    with uproot.open(path) as f:
        tree = f[TREE]
        for name in sorted(tree.keys()):
            arr = tree[name].array(library="ak")
            digest.update(name.encode())
            flat = ak.to_numpy(ak.flatten(arr, axis=None))
            digest.update(np.ascontiguousarray(flat).tobytes())
            if arr.ndim > 1:
                digest.update(np.asarray(ak.num(arr, axis=1)).tobytes())
    return digest.hexdigest()
