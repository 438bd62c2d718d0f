"""The ``CommandPayload`` class: one external process per range (and per merge), or
in ``mode: service`` one long-lived transform per worker process serving its ranges.

The engine's contract (simulate, merge, event numbers, hashes) implemented by
running the experiment's own transforms; templates, parameters and process
helpers live in their own modules beside this one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import shutil
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
from parsl_es.payloads.base import (
    FatalPayloadError,
    Payload,
    PayloadError,
    PayloadParams,
)
from parsl_es.payloads.command.params import (
    CommandParams,
    command_input,
    input_skip,
    simulate_values,
)
from parsl_es.payloads.command.process import (
    _absolute,
    _campaign_of,
    _final_stem,
    _kill_group,
    _tail,
)
from parsl_es.payloads.command.serving import ServiceMode
from parsl_es.payloads.command.templates import render, split_template, token_fields
from parsl_es.ranges import EventRange

#: The engine's directory of merged files: validation reports any file in it that the
#: ledger does not know, so merge logs go to ``<output>/logs/merge`` instead.
MERGED_DIR = "merged"
RUNTIMES = ("shifter", "podman-hpc", "apptainer")

logger = logging.getLogger(__name__)


class CommandPayload(ServiceMode, Payload):
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
    #: A chain step of any kind: it makes events (Gen_tf) or reads whatever its input
    #: step wrote (Sim_tf an EVNT file, Reco_tf a HITS file).
    reads: ClassVar[str | None] = "*"

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self.params: CommandParams = params  # type: ignore[assignment]
        self._init_service()

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
        # a missing or doubly given input, or a range before the input: fatal, nothing made
        command_input(self.params, event_range)
        input_skip(self.params, event_range)
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

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _merge_log_dir(output: Path) -> Path:
        """Beside the output, except in the engine's layout: ``merged/``, or a merge
        attempt's ``ranges/group-NNNNNN/NAME.attempt-N`` (logged to ``logs/merge`` too)."""
        campaign = (
            output.parent.parent if output.parent.name == MERGED_DIR else _campaign_of(output)
        )
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
