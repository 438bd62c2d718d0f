"""How a campaign looks in Jupyter and in a terminal: its live display, status and report.

``parsl_es.notebook``'s handle hands these out; each has ``_repr_html_`` for
Jupyter and a plain ``__repr__`` for everything else.
"""

from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path
from typing import Any

from parsl_es.engine.result import Progress
from parsl_es.ledger import Summary


def progress_bar(share: float) -> str:
    return f'<progress value="{share:.4f}" max="1" style="width:24em"></progress> {share:.0%}'


def step_bar(p: Progress) -> str:
    """A chain step's own bar: its events done, merges and validations."""
    share = p.events_done / p.events_total if p.events_total else 0.0
    text = (
        f"{p.events_done}/{p.events_total} events, in flight {p.ranges_in_flight}, merges "
        f"{p.merges_done}/{p.merges_total} (validated {p.merges_validated})"
    )
    name = html.escape(str(p.step))
    return f"<br><code>{name:>8}</code> {progress_bar(share)} <code>{text}</code>"


class LiveDisplay:
    """A display that updates itself in Jupyter; occasional plain lines elsewhere."""

    def __init__(self, handle: Any) -> None:  # a notebook.CampaignHandle
        self.handle = handle
        self._ipython = None
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
        except ImportError:
            pass
        else:
            shell = get_ipython()
            if shell is not None and getattr(shell, "kernel", None) is not None:  # a Jupyter kernel
                self._html = HTML
                self._ipython = display(HTML(handle._repr_html_()), display_id=True)
        self._last_line = 0.0

    def update(self) -> None:
        if self._ipython is not None:
            self._ipython.update(self._html(self.handle._repr_html_()))
            return
        now = time.time()
        if now - self._last_line > 10.0 or self.handle.done:
            self._last_line = now
            print(self.handle.summary_line(), flush=True)


class CampaignStatus:
    """A campaign's state, as a table in Jupyter and as text elsewhere."""

    def __init__(self, name: str, summary: Summary, kind: str = "campaign") -> None:
        self.name = name
        self.summary = summary
        self.kind = kind  # "step": one step of a chain

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.summary) | {"campaign": self.name, "complete": self.summary.complete}

    def _rows(self) -> list[tuple[str, dict[str, Any]]]:
        s = self.summary
        return [
            ("event ranges", {**s.ranges, "total": s.n_ranges}),
            ("merge groups", {**s.merges, "total": s.n_merges}),
        ]

    def __repr__(self) -> str:
        s = self.summary
        lines = [
            f"{self.kind} {self.name}: {s.events_done}/{s.events_total} events simulated, "
            f"{s.events_merged} merged, validation {s.campaign_validation or 'not yet run'}"
        ]
        for title, row in self._rows():
            lines.append(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
        for nt, row in s.by_node_type.items():
            lines.append(
                f"  node type {nt}: {row['ranges']} ranges, {row['events']} events, "
                f"{row['hosts']} hosts, {row['lost_attempts']} lost"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        parts = [
            f"<b>{self.kind} {e(self.name)}</b>: {e(repr(self).splitlines()[0].split(': ', 1)[1])}"
        ]
        for title, row in self._rows():
            head = "".join(f"<th>{e(str(k))}</th>" for k in row)
            cells = "".join(f"<td>{v}</td>" for v in row.values())
            parts.append(f"<p>{e(title)}</p><table><tr>{head}</tr><tr>{cells}</tr></table>")
        if self.summary.by_node_type:
            keys = next(iter(self.summary.by_node_type.values())).keys()
            head = "<th>node type</th>" + "".join(f"<th>{e(k)}</th>" for k in keys)
            body = "".join(
                f"<tr><td>{e(nt)}</td>" + "".join(f"<td>{row[k]}</td>" for k in keys) + "</tr>"
                for nt, row in self.summary.by_node_type.items()
            )
            parts.append(f"<p>by node type</p><table><tr>{head}</tr>{body}</table>")
        return "\n".join(parts)


class ChainStatus:
    """A chain's state: each step's ``CampaignStatus``, in chain order."""

    def __init__(self, name: str, steps: dict[str, CampaignStatus]) -> None:
        self.name = name
        self.steps = steps

    @property
    def complete(self) -> bool:
        """Every step complete: merged, and its campaign validation passed."""
        return all(s.summary.complete for s in self.steps.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.name,
            "chain": list(self.steps),
            "complete": self.complete,
            "steps": {name: s.to_dict() for name, s in self.steps.items()},
        }

    def _head(self) -> str:
        done = sum(s.summary.complete for s in self.steps.values())
        state = "complete" if self.complete else "incomplete"
        return f"chain {self.name}: {done}/{len(self.steps)} steps complete ({state})"

    def __repr__(self) -> str:
        parts = [self._head()]
        for status in self.steps.values():
            parts.append("\n".join("  " + line for line in repr(status).splitlines()))
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self._head())}</b></p>"]
        for status in self.steps.values():
            parts.append(status._repr_html_())
        return "\n".join(parts)


class Report:
    """The campaign report's pictures, inline in Jupyter (images embedded)."""

    def __init__(self, page: Path) -> None:
        self.page = page

    def images(self) -> list[Path]:
        """The page's pictures in page order (a chain's: its timelines, then each step's)."""
        here = self.page.parent
        names = re.findall(r'<img[^>]* src="([^"]+\.png)"', self.page.read_text())
        return [here / html.unescape(n) for n in names if (here / html.unescape(n)).exists()]

    def __repr__(self) -> str:
        return f"report: {self.page}"

    def _repr_html_(self) -> str:
        imgs = "".join(
            f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
            f'style="max-width:100%"><br>'
            for p in self.images()
        )
        return f"<div><p>{html.escape(str(self.page))}</p>{imgs}</div>"

    def _repr_png_(self) -> bytes:
        """The timeline alone, for front ends that take PNG rather than HTML."""
        return self.images()[0].read_bytes()
