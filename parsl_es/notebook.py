"""Campaigns from Python and Jupyter: ``parsl_es.submit`` returns at once with a handle.

The campaign runs in a background thread of the kernel; the handle shows live
progress (a display that updates itself in Jupyter, a line now and then
elsewhere), answers ``status()``, ``wait()`` and ``cancel()``, gives a future per
merged file, and draws the report inline. A chain campaign shows its progress and
status per step; its ``merged_outputs`` are its last step's merged files (the
chain's outputs) and ``step_merged_outputs(step)`` any step's. The site is loaded once per kernel
(Parsl takes seconds to start) and reused by every later campaign on it; the
sessions are closed when the kernel exits.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from parsl_es import api
from parsl_es.backends.base import WakingEvent
from parsl_es.backends.parsl import ParslBackend
from parsl_es.campaign import CampaignSpec
from parsl_es.chain import ChainSpec
from parsl_es.engine.result import Progress, RunResult
from parsl_es.interrupts import interruptible_result
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.notebook_views import (
    CampaignStatus,
    ChainStatus,
    LiveDisplay,
    Report,
    progress_bar,
    step_bar,
)
from parsl_es.sites import SiteSpec, load_site
from parsl_es.states import MergeState

_SESSIONS: dict[str, ParslBackend] = {}
_LOCK = threading.Lock()


def session_for(
    site: str | Path | SiteSpec = "local", run_dir: str | Path | None = None
) -> ParslBackend:
    """This kernel's loaded session for ``site``, started on first use."""
    spec = site if isinstance(site, SiteSpec) else load_site(site)
    return _session(spec, run_dir, check=True)


def _session(
    spec: SiteSpec, run_dir: str | Path | None = None, check: bool = False
) -> ParslBackend:
    key = spec.model_dump_json()
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None or session.closed:
            if check:
                api.require_usable(spec)
            directory = Path(run_dir) if run_dir else Path.cwd() / "parsl-es-runs" / spec.name
            session = _SESSIONS[key] = ParslBackend(spec, directory)
        return session


@atexit.register
def close_sessions() -> None:
    """Stop every loaded site's interchange and workers (also run when the kernel exits)."""
    with _LOCK:
        for session in _SESSIONS.values():
            session.close()
        _SESSIONS.clear()


def submit(
    campaign: str | Path | dict | CampaignSpec | ChainSpec,
    output: str | Path | None = None,
    *,
    site: str | Path | SiteSpec | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    show: bool = True,
    **options: Any,
) -> CampaignHandle:
    """Start a campaign (or, with ``resume=True``, continue one) and return at once.

    ``campaign`` is a file, a shipped name, a dict or a ``CampaignSpec``; the
    output defaults to the campaign's ``output`` key, else ``<name>-output``. The
    site defaults to ``local`` (to resume: the one the campaign ran on). Every
    input is checked here, in the caller's thread: bad input raises
    ``parsl_es.UserError`` at once, before anything is written.
    """
    if resume:
        prepared = api.prepare_resume(
            campaign if output is None else output, site=site, overrides=overrides
        )
    else:
        prepared = api.prepare(campaign, output, site=site or "local", overrides=overrides)
    session = _session(prepared.site)  # checked by prepare; started once per kernel
    handle = CampaignHandle(prepared, session, options)
    handle.start(show=show)
    return handle


class CampaignHandle:
    """A campaign running in the background of this Python process."""

    def __init__(
        self, prepared: api.PreparedRun, session: ParslBackend, options: dict[str, Any]
    ) -> None:
        self.prepared = prepared
        self.output = prepared.output
        self.spec = prepared.spec
        self.session = session
        self._options = options
        self._stop = WakingEvent()  # wakes the engine, which does not poll for a stop
        self._done: Future[RunResult] = Future()
        self._progress: Progress | None = None
        #: Futures of merged files by (step, merge group); a single-step campaign's step is None.
        self._merged: dict[tuple[str | None, int], Future[Path]] = {}
        self._merges_seen = -1
        self._display: Any = None
        self._last_shown = 0.0
        self._thread: threading.Thread | None = None

    # --- running ---------------------------------------------------------------------
    def start(self, show: bool = True) -> None:
        if show:
            self._display = LiveDisplay(self)
        self._thread = threading.Thread(target=self._run, name="parsl-es campaign", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        options = dict(self._options, session=self.session, stop=self._stop)
        options["on_progress"] = self._on_progress
        try:
            result = api.execute(self.prepared, **options)
        except BaseException as exc:
            self._done.set_exception(exc)
            self._show(force=True)
            return
        self._resolve_merged(final=True)
        self._done.set_result(result)
        self._show(force=True)

    def _on_progress(self, progress: Progress) -> None:
        self._progress = progress
        if progress.merges_done != self._merges_seen:
            self._merges_seen = progress.merges_done
            self._resolve_merged()
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.time()
        if self._display is not None and (force or now - self._last_shown > 1.0):
            self._last_shown = now
            self._display.update()

    # --- asking ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.done()

    @property
    def progress(self) -> Progress | None:
        return self._progress

    def wait(self, timeout: float | None = None) -> RunResult:
        """The run's result once it ends. Interrupting the wait stops the campaign gracefully."""
        try:
            return interruptible_result(self._done, timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Stop gracefully: no new ranges, in-flight ones finish, the ledger is written.

        ``parsl_es.submit(DIR, resume=True)`` (or ``es-run resume DIR``) continues.
        """
        self._stop.set()

    @contextlib.contextmanager
    def _ledger(self) -> Iterator[Ledger]:
        """The campaign's ledger, read-only (the driver thread is its writer)."""
        ledger = Ledger.open(self.output / LEDGER_NAME, readonly=True)
        try:
            yield ledger
        finally:
            ledger.close()

    def status(self) -> CampaignStatus | ChainStatus:
        """Ranges and merges by state, and where the ranges ran, from the ledger.

        A chain's is a ``ChainStatus``: one ``CampaignStatus`` per step.
        """
        with self._ledger() as ledger:
            if not ledger.chain_steps():
                return CampaignStatus(ledger.plan.campaign, ledger.summary())
            name = ledger.campaign_json()["name"]
            return ChainStatus(
                name,
                {
                    step: CampaignStatus(step, part.summary(), kind="step")
                    for step, part in ledger.steps()
                },
            )

    @property
    def steps(self) -> list[str]:
        """A chain's step names in order ([] for a single-step campaign)."""
        return [s.name for s in self.spec.step_plans() if s.name is not None]

    @property
    def merged_outputs(self) -> list[Future[Path]]:
        """One future per merge group, resolved with its merged file when it is written.

        A chain's are its last step's (the chain's outputs); ``step_merged_outputs``
        gives any step's.
        """
        return self.step_merged_outputs(self.steps[-1] if self.steps else None)

    def step_merged_outputs(self, step: str | None) -> list[Future[Path]]:
        """One future per merge group of a chain's ``step`` (None: a single-step campaign)."""
        plans = {s.name: s.plan for s in self.spec.step_plans()}
        if step not in plans:
            raise KeyError(f"no step {step!r} in this campaign; steps: {self.steps or [None]}")
        keys = [(step, g) for g in range(plans[step].n_merges)]
        if keys[0] not in self._merged:
            self._merged.update((key, Future()) for key in keys)
            self._resolve_merged()
        return [self._merged[key] for key in keys]

    def _resolve_merged(self, final: bool = False) -> None:
        if not self._merged or not (self.output / LEDGER_NAME).exists():
            return
        with self._ledger() as ledger:
            for step, part in ledger.steps():
                for m in part.merge_records():
                    fut = self._merged.get((step, m.group))
                    if fut is not None and not fut.done() and m.state is MergeState.DONE:
                        fut.set_result(self.output / (step or "") / m.output)
        if final:
            for (step, g), fut in self._merged.items():
                if not fut.done():
                    where = f" of step {step}" if step else ""
                    fut.set_exception(
                        RuntimeError(f"merge group {g}{where} was not merged in this run")
                    )

    def report(self) -> Report:
        """Write the campaign report and show its pictures here (inline in Jupyter)."""
        from parsl_es.report import build_report

        return Report(build_report(self.output))

    # --- showing ----------------------------------------------------------------------------
    def summary_line(self) -> str:
        p = self._progress
        state = "finished" if self.done else ("stopping" if self._stop.is_set() else "running")
        if p is None:
            return f"campaign {self.output.name}: starting ({state})"
        eta = "--" if p.eta_seconds is None else f"{p.eta_seconds:.0f} s"
        steps = ", ".join(f"{s.step} {s.events_done}/{s.events_total}" for s in p.steps)
        return (
            f"campaign {self.output.name}: {p.events_done}/{p.events_total} events"
            + (f" [{steps}]" if steps else "")
            + ", "
            f"{p.events_per_second:.1f} events/s, ETA {eta}, in flight {p.ranges_in_flight}, "
            f"{p.events_per_second:.1f} events/s, ETA {eta}, in flight {p.ranges_in_flight}, "
            f"merges {p.merges_done}/{p.merges_total} (validated {p.merges_validated}), "
            f"failures {p.failures} [{state}]"
        )

    def __repr__(self) -> str:
        return self.summary_line()

    def _repr_html_(self) -> str:
        p = self._progress
        share = 0.0 if p is None or not p.events_total else p.events_done / p.events_total
        line = html.escape(self.summary_line())
        return (
            f"<div>{progress_bar(share)}<br><code>{line}</code>"
            + "".join(step_bar(s) for s in (p.steps if p is not None else ()))
            + "</div>"
        )
