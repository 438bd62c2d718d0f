"""The range feed: which ranges start next.

Retries go first (a failed range holds up its merge group), then ranges never
started, in order, from a cursor: the feed never lists the campaign, so a
campaign of ten million ranges costs nothing until it runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class RangeFeed:
    def __init__(self, n_ranges: int, cursor: int = 0, retry: Iterable[int] = ()) -> None:
        self.n_ranges = n_ranges
        self.cursor = cursor
        self._retry: deque[int] = deque(retry)

    def take(self, n: int) -> list[int]:
        """Indices of the next ``n`` ranges (fewer at the end): retries first."""
        out = []
        while len(out) < n and self._retry:
            out.append(self._retry.popleft())
        take = min(n - len(out), self.n_ranges - self.cursor)
        if take > 0:
            out.extend(range(self.cursor, self.cursor + take))
            self.cursor += take
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
