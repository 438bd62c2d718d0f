"""The ``CommandPayload`` class: one external process per range (and per merge), or
in ``mode: service`` one long-lived transform per worker process serving its ranges.

The engine's contract (simulate, merge, event numbers, hashes) implemented by
running the experiment's own transforms; templates, parameters and process
helpers live in their own modules beside this one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import uproot

from parsl_es import rootio
from parsl_es.containers import container_argv
from parsl_es.failures import RangeTimeout
from parsl_es.payloads.base import (
    FatalPayloadError,
    Payload,
    PayloadError,
    PayloadParams,
    TransformLost,
)
from parsl_es.payloads.command.params import (
    CommandParams,
    input_skip,
    range_message,
    service_values,
    simulate_values,
)
from parsl_es.payloads.command.process import (
    InitDeaths,
    _absolute,
    _final_stem,
    _kill_group,
    _tail,
)
from parsl_es.payloads.command.protocol import (
    ProtocolError,
    RangeDone,
    RangeFailed,
    RangeMessage,
    Ready,
    ranges_line,
)
from parsl_es.payloads.command.service import (
    CHANNEL_ENV,
    ServiceStats,
    Transform,
    TransformCannotStart,
    TransformGone,
    TransformSilent,
)
from parsl_es.payloads.command.templates import render, split_template, token_fields
from parsl_es.ranges import EventRange
from parsl_es.records import TransformStart

#: The engine's directory of merged files: validation reports any file in it that the
#: ledger does not know, so merge logs go to ``<output>/logs/merge`` instead.
MERGED_DIR = "merged"
#: Where the engine has a merge attempt write (``ranges/group-NNNNNN/NAME.attempt-N``) before
#: the driver renames it into ``merged/``: its log goes to ``logs/merge`` too, one per group.
MERGE_ATTEMPT_DIR = re.compile(r"group-\d+")
RUNTIMES = ("shifter", "podman-hpc", "apptainer")
#: Where service-mode transforms log and work, in the engine's layout (``<output>/logs/service``).
SERVICE_DIR = "service"

logger = logging.getLogger(__name__)


class CommandPayload(Payload):
    """Runs an external transform per range (and optionally per merge).

    Each run gets a fresh work directory beside its output, removed after
    success and kept after a failure. Output and errors go to a log beside the
    output (``<range_id>.log``; merges log to ``logs/merge`` of the campaign),
    one header line per attempt. A run succeeds when the command exits 0, the
    job report (if configured) says ``exitCode: 0`` and the output exists, is
    non-empty and holds a readable tree. A missing executable is fatal; any
    other failure is retried.

    In ``mode: service`` the simulate command is one transform per worker
    process, started at its first range and kept across ranges and bundles; it
    logs and works in ``logs/service`` of the campaign (see ``_serve``).
    """

    name: ClassVar[str] = "command"
    Params: ClassVar[type[PayloadParams]] = CommandParams

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self.params: CommandParams = params  # type: ignore[assignment]
        self._transform: Transform | None = None  # mode: service, started on first use
        self._transform_seed: int | None = None  # the campaign seed it was started with
        self._earlier_starts: list[TransformStart] = []  # of transforms ended for a new seed
        self._init_deaths = InitDeaths()
        self._broken: str | None = None  # why this worker's transform cannot start

    def setup(self) -> None:
        """Fail a worker at once when the simulate executable is not there."""
        if self.params.container is not None:
            self._check_executable(self.params.container.runtime)
            return
        first = split_template(self.params.simulate)[0]
        if not token_fields(first):
            self._check_executable(first)

    def preflight(self) -> dict[str, str]:
        """The executables (or the container runtime) the commands start, looked up here."""
        problems = {}
        p = self.params
        checks = {"container": p.container.runtime} if p.container else {}
        if not p.container:
            for field in ("simulate", "merge"):
                template = getattr(p, field)
                first = split_template(template)[0] if template else None
                if first and not token_fields(first):
                    checks[field] = first
        for field, name in checks.items():
            try:
                self._check_executable(name)
            except FatalPayloadError as exc:
                problems[field] = str(exc)
        return problems

    def simulate(self, event_range: EventRange, output: Path) -> int:
        if self.params.mode == "service":
            return self._serve(event_range, output)
        output = _absolute(output)
        input_skip(self.params, event_range)  # before anything is created
        workdir = self._new_workdir(output.parent, event_range.id)
        values = simulate_values(self.params, event_range, output, workdir)
        log = output.parent / f"{event_range.id}.log"
        return self._execute(
            render(self.params.simulate, values), workdir, log, output, f"range {event_range.id}"
        )

    def merge(self, inputs: Sequence[Path], output: Path) -> int:
        if self.params.merge is None:
            return rootio.merge_files(inputs, output)
        if not inputs:
            raise PayloadError("nothing to merge")
        output = _absolute(output)
        stem = _final_stem(output)
        log_dir = self._merge_log_dir(output)
        workdir = self._new_workdir(log_dir, stem)
        inputs_file = workdir / "inputs.txt"
        inputs_file.write_text("".join(f"{_absolute(p)}\n" for p in inputs))
        values = {
            "inputs_file": str(inputs_file),
            "output": str(output),
            "n_inputs": len(inputs),
            "workdir": str(workdir),
        }
        argv = render(self.params.merge, values)
        return self._execute(argv, workdir, log_dir / f"{stem}.log", output, f"merge {stem}")

    def event_numbers(self, path: Path) -> np.ndarray:
        with uproot.open(path) as f:
            return f[self.params.tree][self.params.event_number_branch].array(library="np")

    def content_hash(self, path: Path) -> str:
        """All branches for ``events`` trees; otherwise only the event numbers are known."""
        if self.params.tree == rootio.TREE:
            return rootio.content_hash(path)
        numbers = np.ascontiguousarray(self.event_numbers(path), dtype=np.int64)
        return hashlib.sha256(numbers.tobytes()).hexdigest()

    def histograms(self, path: Path) -> dict[str, Any]:
        return {}

    def service_stats(self) -> ServiceStats:
        """This worker process's transform starts, restarts and initialisation time."""
        return ServiceStats() if self._transform is None else self._transform.stats

    def take_transform_starts(self) -> list[TransformStart]:
        mine = [] if self._transform is None else self._transform.take_starts()
        earlier, self._earlier_starts = self._earlier_starts, []
        return [*earlier, *mine]

    # --- mode: service -------------------------------------------------------------------

    def _serve(self, r: EventRange, output: Path) -> int:
        """One range through this worker's long-lived transform.

        One range per ``Ready for events [N]``: the payload interface is one range
        per call, and the protocol lets the worker send fewer than asked for.
        Whatever goes wrong in the exchange (the transform died, hung, said
        something unexpected, or the deadline's SIGALRM came) kills the transform:
        its state is unknown, and the next range starts a fresh one. Only a
        range the transform reported done, with an output that reads back, is done.
        """
        output = _absolute(output)
        message = range_message(self.params, r)  # a range before the input: fatal, nothing run
        what = f"range {r.id}"
        t = self._service_transform(output, r.campaign_seed)
        try:
            reply = self._exchange(t, r, what, message)
        except RangeTimeout:
            # A transform still initialising holds no range: the range is redone
            # (not the range's fault), the initialisation goes on for the next one.
            # Otherwise a transform initialising longer than the range timeout
            # (minutes, against a timeout derived from seconds-long ranges) would
            # be killed again at every restart and never serve a range.
            if t.running and not t.ready_once:
                logger.info("%s: timed out while the transform initialises; kept", what)
            else:
                t.kill()
            raise
        except BaseException:
            t.kill()
            raise
        context = f"transform log {t.log}"
        if isinstance(reply, RangeFailed):
            error = FatalPayloadError if reply.fatal else PayloadError
            raise error(f"{what}: the transform failed it: {reply.message} ({context})")
        produced = Path(reply.path)
        if not produced.is_absolute():
            produced = t.workdir / produced
        if not produced.is_file():
            raise PayloadError(
                f"{what}: reported done in {produced}, which is not there ({context})"
            )
        shutil.move(produced, output)
        return self._count_events(output, what, context)

    def _exchange(
        self, t: Transform, r: EventRange, what: str, message: RangeMessage
    ) -> RangeDone | RangeFailed:
        """Hand the range over and wait for its end; each fault as the exception it is."""
        try:
            self._until_ready(t, what)
            t.send(ranges_line([message]))
            return self._reply(t, r)
        except TransformGone as exc:
            raise TransformLost(
                f"{what}: transform (pid {t.pid}) {exc} while holding the range; "
                f"log {t.log}, last lines:\n{_tail(t.log, t.log_offset)}"
            ) from None
        except TransformSilent:
            raise PayloadError(
                f"{what}: transform (pid {t.pid}) said nothing for "
                f"{self.params.timeout_seconds} s and was killed (log {t.log})"
            ) from None
        except ProtocolError as exc:
            raise PayloadError(
                f"{what}: transform (pid {t.pid}): {exc}; killed (log {t.log})"
            ) from None

    def _service_transform(self, output: Path, campaign_seed: int) -> Transform:
        """This worker's transform; one started for another campaign seed is ended first."""
        if self._broken is not None:
            raise FatalPayloadError(self._broken)
        if self._transform is not None and self._transform_seed != campaign_seed:
            starts = self._transform.take_starts()
            self._transform.close()
            self._transform, self._earlier_starts = None, [*self._earlier_starts, *starts]
        if self._transform is None:
            log_dir = self._service_log_dir(output)
            log = log_dir / f"transform-{socket.gethostname()}-{os.getpid()}.log"
            argv = functools.partial(self._service_argv, campaign_seed=campaign_seed)
            self._transform = Transform(argv, self._environment(), log, log_dir)
            self._transform_seed = campaign_seed
        return self._transform

    def _service_argv(self, channel: str, workdir: Path, campaign_seed: int) -> list[str]:
        values = service_values(self.params, channel, workdir, campaign_seed)
        argv = render(self.params.simulate, values)
        spec = self.params.container
        if spec is not None:
            argv = [
                *container_argv(spec, workdir, {**self.params.env, CHANNEL_ENV: channel}),
                *argv,
            ]
        self._check_executable(argv[0])
        return argv

    def _until_ready(self, t: Transform, what: str) -> None:
        """Start the transform if none runs, and wait for its ``Ready for events``.

        Initialisation is limited by ``init_timeout_seconds`` from the start, not
        by the range's deadline (see ``_serve``); a transform dying in it, or
        overrunning it, is started again, up to ``InitDeaths``.
        """
        while True:
            if not t.running:
                if t.stats.starts:
                    logger.warning("%s: starting the transform again (log %s)", what, t.log)
                try:
                    t.start()
                except TransformCannotStart as exc:
                    raise FatalPayloadError(f"{what}: {exc}") from None
            limit = None
            if not t.ready_once:
                limit = max(0.0, self.params.init_timeout_seconds - t.initialising_for())
            try:
                message = t.receive(limit)
            except (TransformGone, TransformSilent) as exc:
                if t.ready_once:  # died idle, between ranges: it held none, start another
                    logger.warning("%s: the idle transform %s (log %s)", what, exc, t.log)
                    t.kill()
                    continue
                if isinstance(exc, TransformSilent):
                    exc = f"did not ask for events within {self.params.init_timeout_seconds} s"
                tail = _tail(t.log, t.log_offset)
                t.kill()
                if self._init_deaths.died():
                    self._broken = (
                        f"the transform died while initialising {self._init_deaths.in_a_row} "
                        f"times in a row (last: {exc}; log {t.log}); last lines:\n{tail}"
                    )
                    raise FatalPayloadError(f"{what}: {self._broken}") from None
                continue
            if not isinstance(message, Ready):
                raise ProtocolError(f"sent {message} when it should ask for events")
            t.initialised()
            self._init_deaths.ready()
            return

    def _reply(self, t: Transform, r: EventRange) -> RangeDone | RangeFailed:
        message = t.receive(self.params.timeout_seconds)
        if isinstance(message, Ready):
            raise ProtocolError(f"asked for events again while holding {r.id}")
        if message.range_id != r.id:
            raise ProtocolError(f"reported range {message.range_id!r}, which it was not given")
        return message

    @staticmethod
    def _service_log_dir(output: Path) -> Path:
        """``<campaign>/logs/service`` in the engine's layout, else beside the output."""
        if MERGE_ATTEMPT_DIR.fullmatch(output.parent.name) and output.parent.parent.name == (
            "ranges"
        ):
            return output.parent.parent.parent / "logs" / SERVICE_DIR
        return output.parent

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _merge_log_dir(output: Path) -> Path:
        """Beside the output, except in the engine's layout (see MERGED_DIR, MERGE_ATTEMPT_DIR)."""
        campaign = None
        if output.parent.name == MERGED_DIR:
            campaign = output.parent.parent
        elif MERGE_ATTEMPT_DIR.fullmatch(output.parent.name) and output.parent.parent.name == (
            "ranges"
        ):
            campaign = output.parent.parent.parent
        if campaign is not None:
            log_dir = campaign / "logs" / "merge"
            log_dir.mkdir(parents=True, exist_ok=True)
            return log_dir
        return output.parent

    @staticmethod
    def _new_workdir(parent: Path, stem: str) -> Path:
        """A fresh directory beside the output: same filesystem, seen by the container."""
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".work-{stem}-", dir=parent))

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.params.env}

    def _check_executable(self, name: str) -> None:
        if shutil.which(name, path=self._environment().get("PATH")) is None:
            where = "on PATH" if "/" not in name else "(no such executable file)"
            raise FatalPayloadError(f"executable {name!r} not found {where}")

    def _full_argv(self, argv: list[str], workdir: Path) -> list[str]:
        spec = self.params.container
        return argv if spec is None else [*container_argv(spec, workdir, self.params.env), *argv]

    def _execute(self, argv: list[str], workdir: Path, log: Path, output: Path, what: str) -> int:
        """Run, check, count the output's events; remove the work directory on success."""
        argv = self._full_argv(argv, workdir)
        try:
            self._check_executable(argv[0])
            code, offset = self._run(argv, workdir, log, what)
        except FatalPayloadError:
            shutil.rmtree(workdir, ignore_errors=True)  # nothing ran: nothing to look at
            raise
        context = f"log {log}, work dir kept at {workdir}"
        if code != 0:
            raise PayloadError(
                f"{what}: {argv[0]} exited with code {code} ({context}); last lines:\n"
                + _tail(log, offset)
            )
        self._check_job_report(workdir, what, context)
        n_events = self._count_events(output, what, context)
        shutil.rmtree(workdir, ignore_errors=True)
        return n_events

    def _run(self, argv: list[str], workdir: Path, log: Path, what: str) -> tuple[int, int]:
        """Run ``argv`` without a shell, output appended to ``log``; (exit code, log offset).

        The command gets its own process group so that a timeout kills what it
        started as well.
        """
        timeout = self.params.timeout_seconds
        with open(log, "ab") as out:
            offset = out.tell()
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            out.write(f"=== {stamp} {what} in {workdir}: {shlex.join(argv)}\n".encode())
            out.flush()
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    argv,
                    shell=False,
                    cwd=workdir,
                    env=self._environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:  # not found or not executable: no retry will help
                raise FatalPayloadError(f"{what}: cannot run {argv[0]!r}: {exc}") from None
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise PayloadError(
                    f"{what}: {argv[0]} timed out after {timeout} s and was killed (log {log})"
                ) from None
            finally:
                if proc.poll() is None:  # interrupted while waiting
                    _kill_group(proc)
            elapsed = time.monotonic() - started
            out.write(f"=== exit code {code} after {elapsed:.1f} s\n".encode())
        return code, offset

    def _check_job_report(self, workdir: Path, what: str, context: str) -> None:
        if self.params.job_report is None:
            return
        path = workdir / self.params.job_report
        try:
            report = json.loads(path.read_text())
        except FileNotFoundError:
            raise PayloadError(f"{what}: no job report {path} ({context})") from None
        except (OSError, ValueError) as exc:
            raise PayloadError(f"{what}: unreadable job report {path}: {exc} ({context})") from None
        code = report.get("exitCode") if isinstance(report, dict) else None
        if code != 0:
            message = report.get("exitMsg", "") if isinstance(report, dict) else ""
            raise PayloadError(
                f"{what}: job report {path} has exitCode {code!r}: {message} ({context})"
            )

    def _count_events(self, output: Path, what: str, context: str) -> int:
        """Entries of the configured tree: proves the output is a readable file."""
        if not output.is_file() or output.stat().st_size == 0:
            state = "is empty" if output.is_file() else "was not created"
            raise PayloadError(f"{what}: output {output} {state} ({context})")
        try:
            with uproot.open(output) as f:
                return int(f[self.params.tree].num_entries)
        except Exception as exc:
            raise PayloadError(
                f"{what}: output {output} has no readable tree {self.params.tree!r}: "
                f"{type(exc).__name__}: {exc} ({context})"
            ) from None
