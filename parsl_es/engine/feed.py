"""The range feed: which ranges start next.

Retries go first (a failed range holds up its merge group), then ranges never
started, in order, from a cursor: the feed never lists the campaign, so a
campaign of ten million ranges costs nothing until it runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence


class RangeFeed:
    def __init__(self, n_ranges: int, cursor: int = 0, retry: Iterable[int] = ()) -> None:
        self.n_ranges = n_ranges
        self.cursor = cursor
        self._retry: deque[int] = deque(retry)

    def take(self, n: int) -> Sequence[int]:
        """Indices of the next ``n`` ranges (fewer at the end): retries first.

        Fresh ranges alone come as a ``range``: the ledger starts them as one span.
        """
        out = []
        while len(out) < n and self._retry:
            out.append(self._retry.popleft())
        take = max(0, min(n - len(out), self.n_ranges - self.cursor))
        fresh = range(self.cursor, self.cursor + take)
        self.cursor += take
        if not out:
            return fresh
        out.extend(fresh)
        return out

    def retry_first(self, index: int) -> None:
        """A range to redo before anything else (its merge group waits on it)."""
        self._retry.appendleft(index)

    def redo(self, indices: Iterable[int]) -> None:
        self._retry.extendleft(indices)

    def left(self) -> int:
        return len(self._retry) + self.n_ranges - self.cursor

    def __bool__(self) -> bool:
        return bool(self._retry) or self.cursor < self.n_ranges


class GatedFeed(RangeFeed):
    """The feed of a step that reads an earlier step's merged files.

    Its ranges are released file by file, as each input file is validated, and
    start in the order they were released (retries first, as always). Nothing it
    offers is new by the cursor: every start goes through the ledger's check that
    the range is ready, which also guards against a file released twice.
    """

    def __init__(self, n_ranges: int, retry: Iterable[int] = ()) -> None:
        super().__init__(n_ranges, cursor=n_ranges, retry=retry)
        self._released: deque[int] = deque()

    def release(self, indices: Iterable[int]) -> None:
        self._released.extend(indices)

    def take(self, n: int) -> Sequence[int]:
        out = list(super().take(n))
        while len(out) < n and self._released:
            out.append(self._released.popleft())
        return out

    def left(self) -> int:
        return super().left() + len(self._released)

    def __bool__(self) -> bool:
        return super().__bool__() or bool(self._released)
