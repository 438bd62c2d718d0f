"""A base for payloads whose outputs are ``events`` TTrees written with uproot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parsl_es.payloads.base import Payload


class RootTreePayload(Payload):
    """Merge, event numbers and content hashes for ``events`` TTree outputs.

    A payload that writes its ranges with ``rootio.write_events`` only has to
    implement ``simulate`` (and ``histograms`` for physics plots).
    """

    suffix = ".root"

    def merge(self, inputs: Sequence[Path], output: Path) -> int:
        from parsl_es import rootio  # uproot and awkward load in ~0.3 s: only where used

        return rootio.merge_files(inputs, output)

    def event_numbers(self, path: Path) -> np.ndarray:
        from parsl_es import rootio

        return rootio.event_numbers(path)

    def content_hash(self, path: Path) -> str:
        from parsl_es import rootio

        return rootio.content_hash(path)
