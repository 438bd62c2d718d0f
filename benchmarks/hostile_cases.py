"""Hostile input for ``es-run``: one table of cases, run by the tests and the benchmark.

``tests/test_hostile_input.py`` runs every case in-process; ``python -m
benchmarks.hostile`` runs each in a fresh process and measures its time and peak
memory. The rule every refusal keeps (issue 11): one line on stderr naming the
file, the field and (for a YAML file) the line; exit code 2; no traceback;
nothing written; well under 2 s and 200 MB whatever the numbers.

A case writes its files under a scratch directory and returns the ``es-run``
arguments and what its one line must say. Every ``submit`` gets ``--walltime
00:00:00`` (unless it is about ``--walltime``/``--end``): input that passes every
check is then refused as "already past" instead of starting Parsl, which is how
the ``accept`` cases (paths with spaces and quotes) show they got through.
``run`` also replaces ``api.execute`` while es-run runs: a regression that let
bad input through would fail here, not start a campaign.

Kept free of test helpers and heavy imports: the benchmark's child processes
import only ``es-run`` itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A valid campaign and site; each case breaks one thing in a copy.
CAMPAIGN = """\
name: c
events: 40
events_per_range: 2
events_per_merge: 10
seed: 11
payload:
  name: emulate
"""
SITE = """\
name: s
node_types:
  cpu:
    provider:
      kind: local
    workers_per_node: 2
steps:
  simulate: [cpu]
  merge: cpu
  validate: cpu
"""
# A valid chain campaign: gen makes events, sim reads gen's merged files, rec sim's.
CHAIN = """\
name: ch
events: 40
seed: 11
chain:
  gen:
    payload: {name: emulate}
    events_per_range: 2
    events_per_merge: 10
  sim:
    payload: {name: emulate}
    input: gen
    events_per_range: 5
    events_per_merge: 10
  rec:
    payload: {name: emulate}
    input: sim
    events_per_range: 5
    events_per_merge: 20
"""
DATASET = "    input: {files: [data/*.hepmc], format: hepmc3}\n"
SLURM = SITE.replace("      kind: local\n", "      kind: slurm\n      walltime: '01:00:00'\n")
STOP = ["--walltime", "00:00:00"]
PAST = "the allocation end (--walltime) is already past"
LIMIT_SECONDS = 2.0
LIMIT_MB = 200


@dataclass
class Setup:
    """What one case runs, and what its one line must (and must not) say."""

    args: list[str]
    needles: tuple[str, ...]
    accept: bool = False  # good input: es-run gets past every check (to the stop)
    absent: tuple[str, ...] = ()
    cleanup: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Case:
    id: str
    family: str  # campaign, site, set, cli, output
    build: Callable[[Path], Setup]

    @property
    def name(self) -> str:
        return f"{self.family}-{self.id}"


# --- building blocks --------------------------------------------------------------------------


def line_no(text: str | bytes, marker: str) -> int:
    """The 1-based line of the last line of ``text`` that holds ``marker``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return max(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def submit(tmp: Path, campaign: Path | str, *extra: str, output: Path | str | None = None):
    stop = [] if {"--walltime", "--end"} & set(extra) else STOP
    out = tmp / "out" if output is None else output
    return ["submit", str(campaign), "-o", str(out), *extra, *stop]


def edited(base: str, old: str | None, new: str) -> str:
    """``base`` with ``old`` replaced by ``new``, or ``new`` appended if ``old`` is None."""
    if old is None:
        return base + new
    assert old in base, old
    return base.replace(old, new, 1)


def campaign(
    id: str, old: str | None, new: str | bytes, *needles: str, at: str | None = None, **kw
) -> Case:
    """A campaign file with ``old`` replaced by ``new``; the line holding ``at`` is named."""

    def build(tmp: Path) -> Setup:
        content = new if isinstance(new, bytes) else edited(CAMPAIGN, old, new)
        path = write(tmp / "c.yaml", content)
        where = f"{path}:{line_no(content, at)}:" if at else f"{path}"
        return Setup(submit(tmp, path), (where, *needles), **kw)

    return Case(id, "campaign", build)


def chain(
    id: str, old: str | None, new: str, *needles: str, at: str | None = None, **files: str
) -> Case:
    """A chain campaign with ``old`` replaced by ``new`` (``files``: beside it, by name)."""

    def build(tmp: Path) -> Setup:
        content = edited(CHAIN, old, new)
        for name, text in files.items():
            write(tmp / name.replace("_", "."), text)
        path = write(tmp / "chain.yaml", content)
        where = f"{path}:{line_no(content, at)}:" if at else f"{path}"
        return Setup(submit(tmp, path), (where, *needles))

    return Case(id, "chain", build)


def site(
    id: str, old: str | None, new: str | bytes, *needles: str, at: str | None = None, base=SITE
) -> Case:
    """A site file (``--site FILE``) with ``old`` replaced by ``new``."""

    def build(tmp: Path) -> Setup:
        content = new if isinstance(new, bytes) else edited(base, old, new)
        path = write(tmp / "site.yaml", content)
        camp = write(tmp / "c.yaml", CAMPAIGN)
        where = f"{path}:{line_no(content, at)}:" if at else f"{path}"
        return Setup(submit(tmp, camp, "--site", str(path)), (where, *needles))

    return Case(id, "site", build)


def override(id: str, item: str, *needles: str, absent: tuple[str, ...] = ()) -> Case:
    """``--set ITEM`` on a good site file: the line names the file and the option or field."""

    def build(tmp: Path) -> Setup:
        path = write(tmp / "site.yaml", SITE)
        camp = write(tmp / "c.yaml", CAMPAIGN)
        args = submit(tmp, camp, "--site", str(path), "--set", item)
        return Setup(args, (f"{path}: ", *needles), absent=absent)

    return Case(id, "set", build)


def option(id: str, extra: list[str], *needles: str) -> Case:
    """A good campaign with bad command-line arguments."""

    def build(tmp: Path) -> Setup:
        return Setup(submit(tmp, write(tmp / "c.yaml", CAMPAIGN), *extra), needles)

    return Case(id, "cli", build)


def case(id: str, family: str, args: Callable[[Path], list[str]], *needles: str) -> Case:
    """Arguments of their own; a needle "{tmp}" stands for the scratch directory."""

    def build(tmp: Path) -> Setup:
        return Setup(args(tmp), tuple(n.replace("{tmp}", str(tmp)) for n in needles))

    return Case(id, family, build)


def output(id: str, make: Callable[[Path], tuple[Path | str, tuple[str, ...]]]) -> Case:
    """A good campaign with ``-o`` from ``make(tmp)``, which returns it and the needles."""

    def build(tmp: Path) -> Setup:
        camp = write(tmp / "c.yaml", CAMPAIGN)
        out, needles = make(tmp)
        return Setup(submit(tmp, camp, output=out), (str(out), *needles))

    return Case(id, "output", build)


# --- cases whose expectations depend on the machine or the user -----------------------------


def _dataset_chain(keep_events: bool = False) -> str:
    """The chain with its first step reading ``data/*.hepmc`` (no events: the files'
    own); its steps read HepMC3 or anything (emulate reads anything)."""
    text = edited(
        CHAIN,
        "    payload: {name: emulate}\n    events_per_range: 2",
        "    payload: {name: emulate}\n" + DATASET + "    events_per_range: 2",
    )
    return text if keep_events else edited(text, "events: 40\n", "")


def _evgen_then_reco() -> str:
    """gen makes HepMC3 files; sim is a reco step, which reads simulated ROOT files."""
    text = edited(
        CHAIN, "  gen:\n    payload: {name: emulate}", "  gen:\n    payload: {name: evgen}"
    )
    return edited(
        text,
        "    payload: {name: emulate}\n    input: gen",
        "    payload: {name: reco}\n    input: gen",
    )


def _chain_setup(
    tmp: Path,
    content: str,
    needles: tuple[str, ...],
    at: str | None = None,
    data: dict | None = None,
) -> Setup:
    (tmp / "data").mkdir(exist_ok=True)
    for name, text in (data or {}).items():
        write(tmp / "data" / name, text)
    path = write(tmp / "chain.yaml", content)
    where = f"{path}:{line_no(content, at)}:" if at else f"{path}"
    return Setup(submit(tmp, path), (where, *needles))


def _unreadable_campaign(tmp: Path) -> Setup:
    """chmod 000: refused for a user; root reads it anyway, and then it is a good campaign."""
    path = write(tmp / "c.yaml", CAMPAIGN)
    path.chmod(0)
    try:
        path.open("rb").close()
    except PermissionError:
        needles: tuple[str, ...] = (str(path), "cannot read campaign file", "Permission denied")
        accept = False
    else:
        needles, accept = (PAST,), True
    return Setup(submit(tmp, path), needles, accept=accept, cleanup=lambda: path.chmod(0o600))


def _read_only_parent(tmp: Path) -> Setup:
    """A read-only directory: refused for a user; root may write there, and is let through."""
    parent = tmp / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    out = parent / "out"
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent))
    except PermissionError:
        needles: tuple[str, ...] = (str(out), "not writable")
        accept = False
    else:
        needles, accept = (PAST,), True
    camp = write(tmp / "c.yaml", CAMPAIGN)
    return Setup(
        submit(tmp, camp, output=out), needles, accept=accept, cleanup=lambda: parent.chmod(0o700)
    )


def _system_directory(tmp: Path) -> Setup:
    """/sys refuses new directories to everyone, root included (its mode says root may)."""
    out = Path("/sys/es-run-hostile-output")
    camp = write(tmp / "c.yaml", CAMPAIGN)
    return Setup(submit(tmp, camp, output=out), (str(out), "cannot create the output directory"))


def _odd_paths(tmp: Path) -> Setup:
    """Spaces, quotes, $, #, ? and % in the paths of the files read: accepted (es-run gets
    to the stop); and an output directory with the characters Parsl can start workers under."""
    odd = tmp / "my dir 'single' \"double\" $HOME #1 ?x %20"
    odd.mkdir()
    camp = write(odd / "a campaign 'q'.yaml", CAMPAIGN)
    site_file = write(odd / 'a site "q".yaml', SITE)
    args = submit(tmp, camp, "--site", str(site_file), output=tmp / "out+,=@:~!^é")
    return Setup(args, (PAST,), accept=True)


def _symlink_loop(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return tmp / "a", ("Too many levels of symbolic links",)


def _symlink_loop_parent(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp / "loop" / "out", ("Too many levels of symbolic links",)


def _symlink_to_busy(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "busy").mkdir()
    (tmp / "busy" / "keep.txt").write_text("someone's work\n")
    (tmp / "link").symlink_to(tmp / "busy")
    return tmp / "link", ("not empty",)


def _dangling(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    return tmp / "dangling", ("symbolic link", "does not exist")


def _a_file(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "afile").write_text("x\n")
    return tmp / "afile", ("not a directory",)


def _parent_links_to_a_file(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "afile").write_text("x\n")
    (tmp / "to-file").symlink_to(tmp / "afile")
    return tmp / "to-file" / "sub" / "out", ("to-file is not a directory",)


def _output_key(text: str, *needles: str, at: str | None = None) -> Callable[[Path], Setup]:
    """A campaign whose ``output`` key is the problem (no ``-o``)."""

    def build(tmp: Path) -> Setup:
        content = CAMPAIGN + text
        path = write(tmp / "c.yaml", content)
        where = f"{path}:{line_no(content, at)}:" if at else ""
        return Setup(["submit", str(path), *STOP], (where, *needles))

    return build


def _bomb_keys(n: int) -> str:
    return "".join(f"k{i}: {i}\n" for i in range(n))


def _alias_chars() -> str:
    """A 20 kB string referred to 400 times: 8 MB once expanded, in a 20 kB file."""
    refs = ", ".join(["*big"] * 400)
    return f"big: &big '{'x' * 20_000}'\nmany: [{refs}]\n"


LONG = "x" * 5000

# One row per case: id, what is changed, what the one line must say; `at` names the
# text whose line the message must give as FILE:LINE:.
# fmt: off
CASES: list[Case] = [
    # --- campaign files: types and numbers ----------------------------------------------------
    campaign("events-bool", "events: 40", "events: true", "events:", "valid integer", at="events:"),
    campaign("events-float-1e19", "events: 40", "events: 1.0e+19", "events:", "valid integer", at="events:"),
    campaign("first-event-negative", None, "first_event: -1\n", "first_event:", "greater than", at="first_event"),
    campaign("seed-huge", "seed: 11", "seed: 99999999999999999999999", "seed:", "less than", at="seed:"),
    campaign("seed-200-digits", "seed: 11", "seed: " + "9" * 200, "seed:", "too large", at="seed:"),
    campaign("seed-sexagesimal-bomb", "seed: 11", "seed: 1" + ":59" * 3000, "seed:", "too large", at="seed:"),
    campaign("seed-nan", "seed: 11", "seed: .nan", "seed:", "valid integer", at="seed:"),
    campaign("seed-date-invalid", "seed: 11", "seed: 2024-13-45", "seed:", "not a valid date", at="seed:"),
    campaign("attempts-yes", None, "attempts: yes\n", "attempts:", "valid integer", at="attempts:"),
    campaign("range-timeout-inf", None, "range_timeout:\n  floor_seconds: .inf\n", "range_timeout.floor_seconds:", "finite", at="floor_seconds"),
    campaign("range-timeout-ceiling-below-floor", None, "range_timeout:\n  floor_seconds: 100\n  ceiling_seconds: 10\n", "range_timeout.ceiling_seconds:", "below floor_seconds", at="ceiling_seconds"),
    campaign("merge-not-multiple-line", "events_per_merge: 10", "events_per_merge: 7", "events_per_merge:", "multiple of", at="events_per_merge"),
    # --- campaign files: payload -------------------------------------------------------------
    campaign("payload-not-a-mapping", "payload:\n  name: emulate\n", "payload: emulate\n", "payload:", "valid dictionary", at="payload:"),
    campaign("payload-name-missing", "  name: emulate\n", "  seconds_per_event: 0\n", "payload.name:", "required key is missing", at="payload:"),
    campaign("payload-name-5000-chars", "name: emulate", f"name: {LONG}", "payload.name:", "(5000 characters)", at=LONG),
    campaign("payload-name-path", "name: emulate", "name: ../../etc/passwd", "payload.name:", "unknown payload '../../etc/passwd'", at="passwd"),
    campaign("payload-name-newline", "name: emulate", 'name: "emu\\nlate"', "payload.name:", "unknown payload 'emu\\nlate'", at="emu"),
    campaign("payload-param-inf", None, "  seconds_per_event: .inf\n", "payload.seconds_per_event:", "finite", at="seconds_per_event"),
    campaign("payload-param-1e400", None, "  seconds_per_event: 1.0e+400\n", "payload.seconds_per_event:", "finite", at="seconds_per_event"),
    campaign("payload-param-bool", None, "  run_number: true\n", "payload.run_number:", "valid integer", at="run_number"),
    # --- campaign files: keys ----------------------------------------------------------------
    campaign("key-unknown-5000-chars", None, f"? {LONG}\n: 1\n", "unknown key", "(5000 characters)", at=LONG),
    campaign("key-a-number", None, "5: x\n", "key '5'", "a number", at="5: x"),
    campaign("key-a-boolean", None, "on: x\n", "key 'on'", "a boolean", at="on: x"),
    campaign("key-duplicate", None, "events: 50\n", "duplicate key 'events'", "first on line 2", at="events: 50"),
    campaign("key-duplicate-nested", None, "  name: physics\n", "payload:", "duplicate key 'name'", at="physics"),
    campaign("steps-not-a-mapping", None, "steps: gpu\n", "steps:", "valid dictionary", at="steps:"),
    campaign("name-dotdot", "name: c", "name: ..", "name:", "should match pattern", at="name: .."),
    campaign("name-5000-chars", "name: c", f"name: {LONG}", "name:", "should match pattern", at=LONG),
    campaign("output-key-nul", None, 'output: "a\\0b"\n', "output:", "no NUL", at="output:"),
    campaign("output-key-empty", None, 'output: ""\n', "output:", "not empty", at="output:"),
    # --- campaign files: not YAML, or YAML that is not safe ---------------------------------
    campaign("scalar-not-mapping", None, b"just some text\n", "must be a mapping"),
    campaign("only-comments", None, b"# name: c\n# events: 40\n", "campaign file is empty"),
    campaign("invalid-utf8", None, b"name: c\nevents: \xff\xfe\n", "not UTF-8 text", at="events"),
    campaign("utf16", None, CAMPAIGN.encode("utf-16"), "binary file"),
    campaign("tab-indent", "  name: emulate", "\tname: emulate", "a tab", at="emulate"),
    campaign("control-character", "name: c", "name: c\x1b[2J", "control character #x001b", at="name: c"),
    campaign("python-object-tag", None, "output: !!python/object/apply:os.system ['touch pwned']\n", "malformed YAML", "python/object/apply", at="output:"),
    campaign("python-name-tag", None, "output: !!python/name:os.system\n", "malformed YAML", at="output:"),
    campaign("custom-tag", "seed: 11", "seed: !secret 11", "malformed YAML", "!secret", at="seed:"),
    campaign("alias-expansion-chars", None, _alias_chars(), "YAML alias expansion"),
    campaign("many-unknown-keys", None, _bomb_keys(3000), "unknown key 'k0'", "and 2995 more problems"),
    case("is-a-directory", "campaign", lambda tmp: submit(tmp, tmp), "{tmp}: campaign file is a directory"),
    case("file-name-too-long", "campaign", lambda tmp: submit(tmp, tmp / ("c" * 300)), "c" * 300, "File name too long"),
    case("endless-device", "campaign", lambda tmp: submit(tmp, "/dev/zero"), "/dev/zero", "more than 65536 bytes"),
    case("read-error", "campaign", lambda tmp: submit(tmp, "/proc/self/mem"), "/proc/self/mem", "cannot read campaign file"),
    Case("unreadable-chmod-000", "campaign", _unreadable_campaign),
    # --- site files -----------------------------------------------------------------------------
    site("kind-unknown", "kind: local", "kind: kubernetes", "node_types.cpu.provider", "'kubernetes'", at="kind:"),
    site("walltime-unquoted", "walltime: '01:00:00'", "walltime: 2:00:00", "provider.walltime", "in quotes", at="walltime", base=SLURM),
    site("walltime-99999-days", "walltime: '01:00:00'", "walltime: '99999-00:00:00'", "provider.walltime", "more than 365 days", at="walltime", base=SLURM),
    site("address-junk", "    workers_per_node: 2\n", "    workers_per_node: 2\n    address: 'not an address!'\n", "node_types.cpu.address", "host name", at="address"),
    site("address-empty", "    workers_per_node: 2\n", "    workers_per_node: 2\n    address: ''\n", "node_types.cpu.address", "host name", at="address"),
    site("address-no-such-interface", "    workers_per_node: 2\n", "    workers_per_node: 2\n    address: interface:nope0\n", "not ready", "no network interface 'nope0'", at="address"),
    site("steps-unknown-node-type", "merge: cpu", "merge: gpu", "steps.merge:", "unknown node type 'gpu'", at="merge:"),
    site("workers-zero", "workers_per_node: 2", "workers_per_node: 0", "workers_per_node:", "from 1 to 4096", at="workers_per_node"),
    site("workers-negative", "workers_per_node: 2", "workers_per_node: -4", "workers_per_node:", "from 1 to 4096", at="workers_per_node"),
    site("workers-a-billion", "workers_per_node: 2", "workers_per_node: 1000000000", "workers_per_node:", "from 1 to 4096", at="workers_per_node"),
    site("workers-bool", "workers_per_node: 2", "workers_per_node: true", "workers_per_node:", "(got True)", at="workers_per_node"),
    site("workers-float", "workers_per_node: 2", "workers_per_node: 2.5", "workers_per_node:", "(got 2.5)", at="workers_per_node"),
    site("accelerators-a-trillion", "workers_per_node: 2", "accelerators: 1000000000000", "node_types.cpu.accelerators:", "from 0 to 256", at="accelerators"),
    site("cores-per-worker-tiny", "workers_per_node: 2", "cores_per_worker: 1.0e-300", "cores_per_worker:", "greater than or equal to 0.01", at="cores_per_worker"),
    site("heartbeat-huge", "workers_per_node: 2", "heartbeat_period: 100000000000000000000", "heartbeat_period:", "less than or equal to 86400", at="heartbeat"),
    site("strategy-period-inf", None, "strategy_period: .inf\n", "strategy_period:", "finite", at="strategy_period"),
    site("node-type-name-slash", "  cpu:\n", "  c/u:\n", "node type name 'c/u'", at="c/u"),
    site("node-type-duplicate", "steps:\n", "  cpu: {}\nsteps:\n", "duplicate key 'cpu'", "first on line 3", at="cpu: {}"),
    site("node-types-100", "node_types:\n", "node_types:\n" + "".join(f"  n{i}: {{}}\n" for i in range(100)), "node_types:", "at most 64", at="node_types:"),
    site("name-path", "name: s", "name: ../../etc", "name:", "should match pattern", at="name:"),
    site("python-tag", None, "description: !!python/object/apply:os.system ['touch pwned']\n", "malformed YAML", at="description"),
    site("invalid-utf8", None, SITE.encode() + b"description: \xc3\x28\n", "not UTF-8 text", at="description"),
    case("is-a-directory", "site", lambda tmp: submit(tmp, write(tmp / "c.yaml", CAMPAIGN), "--site", str(tmp)), "{tmp}: site file is a directory"),
    # --- --set overrides ------------------------------------------------------------------------
    override("empty-key", "=3", "--set '=3'", "expected KEY=VALUE"),
    override("empty-field-name", "cpu..workers_per_node=2", "a field name is empty"),
    override("unknown-nested-key", "cpu.colour=red", "node_types.cpu: unknown key 'colour'"),
    override("bad-value-type", "cpu.workers_per_node=lots", "node_types.cpu.workers_per_node:", "(got 'lots')", absent=(".yaml:6:", "line 6")),
    override("path-into-a-value", "name.first=x", "'name' is not a mapping"),
    override("number-5000-digits", "cpu.workers_per_node=" + "9" * 5000, "(5021 characters)", "too large"),
    override("workers-huge", "cpu.workers_per_node=100000", "node_types.cpu.workers_per_node:", "from 1 to 4096"),
    override("inf", "cpu.cores_per_worker=.inf", "node_types.cpu.cores_per_worker:", "finite"),
    override("malformed-yaml", "cpu.workers_per_node=[1,", "--set 'cpu.workers_per_node=[1,'", "malformed YAML"),
    override("python-tag", "description=!!python/object/apply:os.system ['touch pwned']", "malformed YAML"),
    override("nested-5000-deep", "description=" + "[" * 5000, "nested too deeply"),
    override("control-character", "description=\x1b[2J", "control character #x001b"),
    override("key-5000-chars", "k" * 5000 + "=1", "(5000 characters)", "no such site field"),
    # --- command-line arguments -----------------------------------------------------------------
    option("unknown-option", ["--colour", "red"], "No such option: --colour"),
    option("bundle-size-is-no-option", ["--bundle-size", "3"], "No such option: --bundle-size"),
    option("extra-argument", ["surplus"], "unexpected extra argument"),
    case("missing-argument", "cli", lambda tmp: ["submit"], "Missing argument 'campaign'"),
    option("walltime-huge-days", ["--walltime", "9" * 400 + "-00:00:00"], "--walltime", "more than 365 days"),
    option("end-tomorrow", ["--end", "tomorrow"], "--end 'tomorrow'", "ISO time"),
    option("end-nan", ["--end", "nan"], "--end 'nan'", "clock can reach"),
    option("end-inf", ["--end", "inf"], "--end 'inf'", "clock can reach"),
    option("end-1e300", ["--end", "1e300"], "--end '1e300'", "clock can reach"),
    option("margin-negative", ["--margin", "-5"], "'--margin'", "finite number >= 0"),
    option("margin-nan", ["--margin", "nan"], "'--margin'", "finite number >= 0"),
    option("margin-not-a-number", ["--margin", "lots"], "'--margin'", "valid number"),
    # --- output paths ---------------------------------------------------------------------------
    output("symlink-to-busy-directory", _symlink_to_busy),
    output("symlink-dangling", _dangling),
    output("symlink-loop", _symlink_loop),
    output("symlink-loop-in-parent", _symlink_loop_parent),
    output("is-a-file", _a_file),
    output("parent-links-to-a-file", _parent_links_to_a_file),
    output("component-too-long", lambda tmp: (tmp / ("o" * 300), ("File name too long",))),
    output("nested-component-too-long", lambda tmp: (tmp / "x" / "y" / ("o" * 300), ("File name too long",))),
    output("path-too-long", lambda tmp: (tmp / "/".join(["p" * 200] * 25), ("File name too long",))),
    Case("read-only-parent", "output", _read_only_parent),
    Case("under-sys", "output", _system_directory),
    Case("campaign-output-key-too-long", "output", _output_key("output: " + "z" * 300 + "\n", "z" * 300, "File name too long")),
    Case("odd-characters-accepted", "output", _odd_paths),
    output("spaces-and-quotes", lambda tmp: (tmp / "out 'q' \"q\"", ("holds ' '", "Parsl cannot start workers under it"))),
    output("hash", lambda tmp: (tmp / "out#1", ("holds '#'", "Parsl cannot start workers under it"))),
    # --- chain campaigns ------------------------------------------------------------------------
    chain("input-itself", "input: sim", "input: rec", "chain.rec.input:", "names itself", at="input: rec"),
    chain("input-later-step", "input: gen", "input: rec", "chain.sim.input:", "'rec' comes later in the chain", at="input: rec"),
    chain("input-unknown-step", "input: gen", "input: evgen", "chain.sim.input:", "no step 'evgen'", "steps: gen, rec, sim", at="input: evgen"),
    chain("no-payload", "    payload: {name: emulate}\n    input: gen", "    input: gen", "chain.sim.payload:", "required key is missing", at="  sim:"),
    chain("no-input-after-first", "    input: sim\n", "", "chain.rec.input:", "only the first step makes its own events", at="  rec:"),
    chain("unknown-payload", "    payload: {name: emulate}\n    input: sim", "    payload: {name: recon}\n    input: sim", "chain.rec.payload.name:", "unknown payload 'recon'", at="{name: recon}"),
    chain("range-spans-input-files", "    events_per_range: 5\n    events_per_merge: 10", "    events_per_range: 4\n    events_per_merge: 12", "chain.sim.events_per_range:", "must divide the events_per_merge (10)", at="events_per_range: 4"),
    chain("bad-step-name", "  rec:\n", "  Reco-1:\n", "chain.Reco-1:", "lower-case letters", at="Reco-1"),
    chain("steps-simulate", "seed: 11\n", "seed: 11\nsteps:\n  simulate: [local]\n", "steps.simulate:", "node_types instead", at="simulate:"),
    chain("node-type-unknown", "    events_per_merge: 20\n", "    events_per_merge: 20\n    node_types: [gpu]\n", "chain.rec.node_types:", "node type 'gpu' is not in site 'local'"),
    Case("dataset-glob-matches-nothing", "chain", lambda tmp: _chain_setup(tmp, _dataset_chain(), ("chain.gen.input.files:", "data/*.hepmc"), at="input: {files")),
    Case("dataset-not-hepmc3", "chain", lambda tmp: _chain_setup(tmp, _dataset_chain(), ("chain.gen.input.files:", "not a HepMC3 file"), data={"a.hepmc": "just text\n"})),
    Case("dataset-on-a-later-step", "chain", lambda tmp: _chain_setup(tmp, edited(CHAIN, "    input: sim\n", DATASET), ("chain.rec.input:", "only the chain's first step may read a dataset"), at="input: {files")),
    Case("formats-do-not-fit", "chain", lambda tmp: _chain_setup(tmp, _evgen_then_reco(), ("chain.sim.input:", "reads sim-root files", "step 'gen' (payload 'evgen') writes hepmc3"), at="input: gen")),
    Case("dataset-with-events", "chain", lambda tmp: _chain_setup(tmp, _dataset_chain(keep_events=True), ("events:", "takes its events and their numbers from the dataset"), at="events: 40")),
]
# fmt: on


# --- running a case -------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    exception: BaseException | None = None


@contextlib.contextmanager
def _no_run() -> Iterator[None]:
    """While es-run runs a case, a campaign that would start fails instead."""
    from parsl_es import api

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("bad input got through: api.execute was called")

    real = api.execute
    api.execute = refuse
    try:
        yield
    finally:
        api.execute = real


def run(args: list[str]) -> Outcome:
    """``es-run ARGS`` in this process; the time is the command's alone (imports done)."""
    from typer.testing import CliRunner

    from parsl_es.cli.main import app

    runner = CliRunner()
    with _no_run():
        start = time.perf_counter()
        result = runner.invoke(app, args)
        seconds = time.perf_counter() - start
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout, result.stderr, seconds, exception)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): type, size, link target."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            found[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), size, target)
    return found


def problems(setup: Setup, outcome: Outcome, before: dict, after: dict) -> list[str]:
    """How the outcome breaks the rule (empty: it keeps it)."""
    found = []
    text = outcome.stdout + outcome.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    if outcome.exception is not None:
        found.append(f"raised {type(outcome.exception).__name__}: {outcome.exception}")
    if outcome.code != 2:
        found.append(f"exit code {outcome.code}, expected 2")
    if "Traceback" in text:
        found.append("a traceback")
    if len(lines) != 1:
        found.append(f"{len(lines)} lines, expected one")
    if outcome.stdout.strip():
        found.append("output on stdout, expected only the line on stderr")
    line = lines[0] if lines else ""
    found += [f"the line does not say {n!r}" for n in setup.needles if n not in line]
    found += [f"the line says {n!r}" for n in setup.absent if n in line]
    if setup.accept and PAST not in line:
        found.append("good input was refused")
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        found.append(f"wrote or changed {changed[:3]}")
    if outcome.seconds >= LIMIT_SECONDS:
        found.append(f"took {outcome.seconds:.2f} s")
    return found


def run_case(case: Case, tmp: Path) -> tuple[Setup, Outcome, list[str]]:
    """Build the case in ``tmp``, run it, and say how it broke the rule."""
    setup = case.build(tmp)
    try:
        before = snapshot(tmp)
        outcome = run(setup.args)
        after = snapshot(tmp)
    finally:
        setup.cleanup()
    return setup, outcome, problems(setup, outcome, before, after)


def by_name(name: str) -> Case:
    return next(c for c in CASES if c.name == name)
