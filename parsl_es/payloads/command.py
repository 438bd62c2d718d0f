"""The ``command`` payload: run an experiment's own transforms, one process per range.

A campaign names a command-line template for simulation (an ATLAS ``Sim_tf.py``
line, say) and optionally one for merging; this payload fills in the range's
numbers and paths and runs it, optionally inside a container. The engine keeps
doing what it does for any payload: temporary names, renames, checksums,
retries, the ledger, validation (which reads event numbers with uproot).

Templates are never given to a shell. Each one is split into arguments with
``shlex.split`` *before* anything is substituted, then every placeholder is
filled with ``str.format`` inside its own argument, and the argument list is
run with ``shell=False``. A value holding spaces, quotes, ``;``, ``$(...)`` or
braces therefore arrives as (part of) exactly one argument, literally.

Simulate placeholders: ``{input}``, ``{output}``, ``{skip}``, ``{first_event}``,
``{last_event}``, ``{n_events}``, ``{seed}``, ``{campaign_seed}``, ``{range_id}``,
``{workdir}``. Merge placeholders: ``{inputs_file}``, ``{output}``,
``{n_inputs}``, ``{workdir}``. A literal brace is written ``{{`` or ``}}``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import uproot
from pydantic import Field, field_validator, model_validator

from parsl_es import rootio
from parsl_es.containers import ContainerSpec, container_argv
from parsl_es.fileio import TMP_MARK
from parsl_es.payloads.base import FatalPayloadError, Payload, PayloadError, PayloadParams
from parsl_es.ranges import EventRange

#: Placeholders a simulate template may use, and the type of each value.
SIMULATE_FIELDS: dict[str, type] = {
    "input": str,
    "output": str,
    "skip": int,
    "first_event": int,
    "last_event": int,
    "n_events": int,
    "seed": int,
    "campaign_seed": int,
    "range_id": str,
    "workdir": str,
}
#: Placeholders a merge template may use.
MERGE_FIELDS: dict[str, type] = {"inputs_file": str, "output": str, "n_inputs": int, "workdir": str}
#: Lines of the transform's log quoted in an error message.
TAIL_LINES = 20
#: The engine's directory of merged files: validation reports any file in it that the
#: ledger does not know, so merge logs go to ``<output>/logs/merge`` instead.
MERGED_DIR = "merged"
#: Where the engine has a merge attempt write (``ranges/group-NNNNNN/NAME.attempt-N``) before
#: the driver renames it into ``merged/``: its log goes to ``logs/merge`` too, one per group.
MERGE_ATTEMPT_DIR = re.compile(r"group-\d+")
ATTEMPT_SUFFIX = re.compile(r"\.attempt-\d+$")
RUNTIMES = ("shifter", "podman-hpc", "apptainer")


# --- templates -------------------------------------------------------------------------


def split_template(template: str) -> list[str]:
    """The template's arguments, split as a POSIX shell would but never run by one."""
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot be split into arguments: {exc}") from None
    if not tokens:
        raise ValueError("is empty")
    return tokens


def token_fields(token: str) -> list[str]:
    """The placeholder names in one argument; ValueError on bad braces or non-names."""
    try:
        parsed = list(string.Formatter().parse(token))
    except ValueError as exc:
        raise ValueError(
            f"bad braces in {token!r} ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    names = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} in {token!r} is not a plain name")
        if spec and "{" in spec:
            raise ValueError(f"nested placeholder in the format of {{{name}}} in {token!r}")
        names.append(name)
    return names


def template_fields(template: str) -> set[str]:
    """Every placeholder name a template uses."""
    return {name for token in split_template(template) for name in token_fields(token)}


def render(template: str, values: Mapping[str, Any]) -> list[str]:
    """The argument list: split first, then fill each argument on its own.

    ``str.format`` makes a single pass, so braces inside a value stay literal too.
    """
    return [token.format_map(values) for token in split_template(template)]


def check_template(template: str, fields: Mapping[str, type], what: str) -> str:
    """Reject unknown placeholders and bad format specs when the campaign is loaded."""
    used = template_fields(template)
    unknown = sorted(used - set(fields))
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        allowed = ", ".join(f"{{{n}}}" for n in fields)
        raise ValueError(f"unknown placeholder {names} in the {what} template; allowed: {allowed}")
    sample = {name: (kind() if kind is int else "x") for name, kind in fields.items()}
    try:
        render(template, sample)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the {what} template cannot be filled in: {exc}") from None
    return template


# --- parameters --------------------------------------------------------------------------


class CommandParams(PayloadParams):
    """Parameters of the command payload: templates, container, environment, checks."""

    simulate: str = Field(
        description="Command line simulating one range, with placeholders such as {output}, "
        "{skip} and {n_events}; split like a shell would, never run by one."
    )
    merge: str | None = Field(
        None,
        description="Command line merging range files listed in {inputs_file} into {output}; "
        "if unset, the events TTrees are concatenated in-process.",
    )
    input: str | None = Field(
        None, description="The {input} value, e.g. an EVNT file (use an absolute path)."
    )
    input_first_event: int = Field(
        0,
        ge=0,
        description="Event number of the input's first event: {skip} is a range's first event "
        "minus this.",
    )
    container: ContainerSpec | None = Field(None, description="Run the commands in a container.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the commands."
    )
    job_report: str | None = Field(
        None,
        description="A JSON report the transform writes in its work directory (ATLAS "
        "jobReport.json); success needs its top-level exitCode to be 0.",
    )
    timeout_seconds: float | None = Field(
        None, gt=0, description="Kill a command running longer than this (a retryable failure)."
    )
    tree: str = Field("events", min_length=1, description="TTree holding the event numbers.")
    event_number_branch: str = Field(
        "event_number", min_length=1, description="Branch of the event numbers in that tree."
    )

    @field_validator("simulate")
    @classmethod
    def _check_simulate(cls, value: str) -> str:
        return check_template(value, SIMULATE_FIELDS, "simulate")

    @field_validator("merge")
    @classmethod
    def _check_merge(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, MERGE_FIELDS, "merge")

    @field_validator("env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """YAML reads ``ATHENA_CORE_NUMBER: 1`` as an int; the environment holds text."""
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not k or "=" in k or "\0" in k]
        if bad:
            raise ValueError(f"invalid environment variable name {bad[0]!r}")
        return value

    @field_validator("job_report")
    @classmethod
    def _report_in_workdir(cls, value: str | None) -> str | None:
        if value is not None and (not value or Path(value).is_absolute()):
            raise ValueError("must be a path relative to the work directory")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CommandParams:
        if "input" in template_fields(self.simulate) and self.input is None:
            raise ValueError("the simulate template uses {input} but no input is set")
        if self.merge is None and self.tree != rootio.TREE:
            raise ValueError(
                f"tree {self.tree!r} needs a merge template: the built-in merge only "
                f"concatenates {rootio.TREE!r} trees"
            )
        return self


def input_skip(params: CommandParams, r: EventRange) -> int:
    """How many input events precede the range: the payload cannot know the campaign's
    first event, so it counts from ``input_first_event``, the input's first event number."""
    skip = r.first_event - params.input_first_event
    if skip < 0:
        raise FatalPayloadError(
            f"range {r.id} starts at event {r.first_event}, before the input's first event "
            f"{params.input_first_event} (input_first_event)"
        )
    return skip


def simulate_values(params: CommandParams, r: EventRange, output: Path, workdir: Path) -> dict:
    """The simulate placeholders' values for one range."""
    return {
        "input": params.input if params.input is not None else "",
        "output": str(output),
        "skip": input_skip(params, r),
        "first_event": r.first_event,
        "last_event": r.last_event,
        "n_events": r.n_events,
        "seed": r.seed,
        "campaign_seed": r.campaign_seed,
        "range_id": r.id,
        "workdir": str(workdir),
    }


# --- running -----------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command and everything it started (transforms fork, runtimes wrap)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path, offset: int, lines: int = TAIL_LINES) -> str:
    """The last lines this attempt wrote to the log."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return "\n".join(line[:300] for line in text.splitlines()[-lines:])


def _final_stem(output: Path) -> str:
    """The output's name without the engine's temporary prefix, attempt number and suffix."""
    name = output.name
    if name.startswith(TMP_MARK):
        name = name[len(TMP_MARK) :].partition("-")[2] or name
    return ATTEMPT_SUFFIX.sub("", Path(name).stem)


def _absolute(path: Path) -> Path:
    """Absolute without resolving symlinks: the command runs in another directory."""
    return Path(os.path.abspath(path))


class CommandPayload(Payload):
    """Runs an external transform per range (and optionally per merge).

    Each run gets a fresh work directory beside its output, removed after
    success and kept after a failure. Output and errors go to a log beside the
    output (``<range_id>.log``; merges log to ``logs/merge`` of the campaign),
    one header line per attempt. A run succeeds when the command exits 0, the
    job report (if configured) says ``exitCode: 0`` and the output exists, is
    non-empty and holds a readable tree. A missing executable is fatal; any
    other failure is retried.
    """

    name: ClassVar[str] = "command"
    Params: ClassVar[type[PayloadParams]] = CommandParams

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self.params: CommandParams = params  # type: ignore[assignment]

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
