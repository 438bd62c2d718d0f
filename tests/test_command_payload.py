"""The command payload with real processes: the physics CLI and a small fake transform."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from parsl_es import rootio
from parsl_es.campaign import campaign_from_dict
from parsl_es.errors import UserError
from parsl_es.payloads import FatalPayloadError, PayloadError, load_payload_class, make_payload
from parsl_es.payloads.command import (
    CommandParams,
    CommandPayload,
    ContainerSpec,
    container_argv,
    render,
    simulate_values,
)
from parsl_es.payloads.physics import PhysicsPayload
from parsl_es.ranges import EventRange

SEED = 3
PY = shlex.quote(sys.executable)
PHYSICS = f"{PY} -m parsl_es.payloads.physics"

#: A stand-in transform: writes an events tree, echoes an argument, fails on request.
FAKE_TF = """
import argparse, json, os, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("--output")
p.add_argument("--first", type=int, default=0)
p.add_argument("--last", type=int, default=-1)
p.add_argument("--echo", help="written literally to OUTPUT.arg")
p.add_argument("--echo-env", help="value of this variable written to OUTPUT.env")
p.add_argument("--exit-code", type=int, default=0)
p.add_argument("--report-code", type=int)
p.add_argument("--sleep", type=float, default=0)
a = p.parse_args()
time.sleep(a.sleep)
if a.echo is not None:
    pathlib.Path(a.output + ".arg").write_text(a.echo)
if a.echo_env:
    pathlib.Path(a.output + ".env").write_text(os.environ[a.echo_env])
if a.report_code is not None:
    report = {"exitCode": a.report_code, "exitMsg": "transform said no"}
    pathlib.Path("jobReport.json").write_text(json.dumps(report))
if a.exit_code:
    print("fake_tf: simulated crash, marker-1234", file=sys.stderr)
    sys.exit(a.exit_code)
if a.last >= a.first:
    import numpy as np, uproot
    with uproot.recreate(a.output) as f:
        f["events"] = {"event_number": np.arange(a.first, a.last + 1, dtype=np.int64)}
"""


#: A stand-in transform with an input (a simulation reading generated events, a
#: reconstruction reading hits): copies events SKIP..SKIP+N-1 of INPUT's events tree,
#: every branch, to OUTPUT; refuses to read past the file's end, as a transform would.
READ_TF = """
import argparse, pathlib, sys
from parsl_es import rootio
p = argparse.ArgumentParser()
p.add_argument("--input", required=True)
p.add_argument("--skip", type=int, required=True)
p.add_argument("--n", type=int, required=True)
p.add_argument("--output", required=True)
a = p.parse_args()
columns = rootio.read_events(pathlib.Path(a.input))
if a.skip < 0 or a.skip + a.n > len(columns["event_number"]):
    print(f"read_tf: events {a.skip}..{a.skip + a.n - 1} not in {a.input}", file=sys.stderr)
    sys.exit(2)
stop = a.skip + a.n
rootio.write_events(pathlib.Path(a.output), {k: v[a.skip:stop] for k, v in columns.items()})
print(f"read_tf: {a.n} events from {a.input} after {a.skip}")
"""


def make_range(first: int, last: int, campaign: str = "c") -> EventRange:
    return EventRange(
        campaign=campaign,
        index=0,
        first_event=first,
        last_event=last,
        merge_group=0,
        campaign_seed=SEED,
    )


def engine_tmp_path(directory: Path, r: EventRange) -> Path:
    """The kind of temporary name the engine hands to simulate."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f".tmp-abc123def456-{r.id}.attempt-1.root"


@pytest.fixture(scope="module")
def fake_tf(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bin") / "fake_tf.py"
    path.write_text(FAKE_TF)
    return f"{PY} {shlex.quote(str(path))}"


@pytest.fixture(scope="module")
def read_tf(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bin") / "read_tf.py"
    path.write_text(READ_TF)
    return f"{PY} {shlex.quote(str(path))}"


def input_file(path: Path, first: int, last: int) -> Path:
    """An earlier step's merged file: events ``first..last`` and a branch derived from each."""
    numbers = np.arange(first, last + 1, dtype=np.int64)
    rootio.write_events(path, {"event_number": numbers, "x": numbers * 10 + 7})
    return path


def reading(r: EventRange, input_path: Path | str, skip: int) -> EventRange:
    """``r`` as the engine fills it for a step with an input."""
    return dataclasses.replace(r, input=str(input_path), skip=skip)


@pytest.fixture(scope="module")
def physics() -> PhysicsPayload:
    p = PhysicsPayload(PhysicsPayload.Params(process="minbias"))
    p.setup()
    return p


def command(**params) -> CommandPayload:
    payload = make_payload("command", params)
    assert isinstance(payload, CommandPayload)
    return payload


# --- real transforms ---------------------------------------------------------------------


def test_registered() -> None:
    assert load_payload_class("command") is CommandPayload


@pytest.mark.integration  # starts real transforms for seconds
def test_physics_cli_gives_the_same_events_as_in_process(
    physics: PhysicsPayload, tmp_path: Path
) -> None:
    r = make_range(5, 7)
    payload = command(
        simulate=f"{PHYSICS} simulate --process minbias --first-event {{first_event}} "
        "--n-events {n_events} --campaign-seed {campaign_seed} --output {output} "
        "--job-report jobReport.json",
        job_report="jobReport.json",
    )
    payload.setup()
    group = tmp_path / "ranges" / "group-000000"
    output = engine_tmp_path(group, r)
    assert payload.simulate(r, output) == 3
    inproc = tmp_path / "inproc.root"
    physics.simulate(r, inproc)
    assert payload.content_hash(output) == rootio.content_hash(inproc)
    assert list(payload.event_numbers(output)) == [5, 6, 7]
    log = group / f"{r.id}.log"
    assert "3 events written" in log.read_text()
    assert log.read_text().startswith("=== ")
    # the work directory is gone after success; only the output and the log remain
    assert sorted(p.name for p in group.iterdir()) == sorted([output.name, log.name])


@pytest.mark.parametrize(
    "written",
    [
        "merged/.tmp-abc123def456-c.merge-000000.root",
        # the engine's merge attempt, beside the group's range files (renamed into merged/)
        "ranges/group-000000/.tmp-abc123def456-c.merge-000000.attempt-2.root",
    ],
)
@pytest.mark.integration  # starts real transforms for seconds
def test_external_merge_in_event_order(
    physics: PhysicsPayload, tmp_path: Path, written: str
) -> None:
    ranges = [make_range(0, 1), make_range(2, 3)]
    inputs = []
    for r in ranges:
        path = tmp_path / "ranges" / f"{r.id}.root"
        path.parent.mkdir(exist_ok=True)
        physics.simulate(r, path)
        inputs.append(path)
    payload = command(
        simulate=f"{PHYSICS} simulate --first-event {{first_event}} --n-events {{n_events}} "
        "--campaign-seed {campaign_seed} --output {output}",
        merge=f"{PHYSICS} merge --inputs-file {{inputs_file}} --output {{output}}",
    )
    output = tmp_path / written
    merged_dir = output.parent
    merged_dir.mkdir(exist_ok=True)
    assert payload.merge(inputs, output) == 4
    assert list(payload.event_numbers(output)) == [0, 1, 2, 3]
    reference = tmp_path / "reference.root"
    rootio.merge_files(inputs, reference)
    assert payload.content_hash(output) == rootio.content_hash(reference)
    # nothing but the output in merged/ (validation reports strays); the log is in logs/merge
    assert [p.name for p in merged_dir.iterdir()] == [output.name]
    assert (tmp_path / "logs" / "merge" / "c.merge-000000.log").exists()
    assert not list(tmp_path.rglob("*.attempt-*.log"))


def test_builtin_merge_without_template(tmp_path: Path, fake_tf: str) -> None:
    payload = command(simulate=f"{fake_tf} --output {{output}}")
    inputs = []
    for first in (0, 2):
        path = tmp_path / f"{first}.root"
        rootio.write_events(path, {"event_number": np.arange(first, first + 2)})
        inputs.append(path)
    assert payload.merge(inputs, tmp_path / "m.root") == 4
    assert list(payload.event_numbers(tmp_path / "m.root")) == [0, 1, 2, 3]


# --- no shell ------------------------------------------------------------------------------


def test_shell_metacharacters_arrive_literally(tmp_path: Path, fake_tf: str) -> None:
    sentinel = tmp_path / "pwned"
    nasty = (
        f"; touch {sentinel} && echo $(touch {sentinel}) `touch {sentinel}` "
        "| cat > x 'single' \"double\" {output} $HOME * ~"
    )
    payload = command(
        simulate=f"{fake_tf} --output {{output}} --first {{first_event}} --last {{last_event}} "
        '"--echo={input}"',
        input=nasty,
    )
    r = make_range(0, 1)
    output = engine_tmp_path(tmp_path, r)
    assert payload.simulate(r, output) == 2
    assert Path(f"{output}.arg").read_text() == nasty
    assert not sentinel.exists()
    assert not (tmp_path / "x").exists()


def test_render_splits_before_substituting() -> None:
    values = {"input": "a b; rm -rf ~ $(x)", "output": "/o u t/{n}.root", "n": 1}
    argv = render("prog --in {input} --out={output} 'lit {{x}}' {input}{n}", values)
    assert argv == [
        "prog",
        "--in",
        "a b; rm -rf ~ $(x)",
        "--out=/o u t/{n}.root",
        "lit {x}",
        "a b; rm -rf ~ $(x)1",
    ]


def test_environment_reaches_the_command(tmp_path: Path, fake_tf: str) -> None:
    payload = command(
        simulate=f"{fake_tf} --output {{output}} --first 0 --last 0 --echo-env PARSL_ES_T",
        env={"PARSL_ES_T": "1 2 $(3)", "OTHER": 4},
    )
    output = tmp_path / "r.root"
    payload.simulate(make_range(0, 0), output)
    assert Path(f"{output}.env").read_text() == "1 2 $(3)"


def test_skip_counts_from_the_inputs_first_event(tmp_path: Path) -> None:
    params = CommandParams(
        simulate="tf --skip {skip} --in {input}", input="/d/EVNT.root", input_first_event=100
    )
    values = simulate_values(params, make_range(105, 109), tmp_path / "o.root", tmp_path)
    assert (values["skip"], values["n_events"], values["input"]) == (5, 5, "/d/EVNT.root")
    with pytest.raises(FatalPayloadError, match="input_first_event"):
        simulate_values(params, make_range(99, 100), tmp_path / "o.root", tmp_path)


# --- input from the range (chain steps, datasets) --------------------------------------------

SIM_TEMPLATE = "--input {input} --skip {skip} --n {n_events} --output {output}"


@pytest.mark.integration  # starts real transforms for seconds
def test_a_range_reads_its_own_input_file(tmp_path: Path, read_tf: str) -> None:
    """{input}, {skip} and {n_events} come from the range; no input parameter is set."""
    merged = tmp_path / "merged"
    merged.mkdir()
    file0 = input_file(merged / "gen.merge-000000.root", 100, 139)
    file1 = input_file(merged / "gen.merge-000001.root", 140, 179)
    payload = command(simulate=f"{read_tf} {SIM_TEMPLATE}")
    payload.setup()
    for r, path, skip in [
        (make_range(120, 129), file0, 20),  # inside the first file
        (make_range(130, 139), file0, 30),  # its last events
        (make_range(140, 144), file1, 0),  # the next file's first
    ]:
        r = reading(r, path, skip)
        output = engine_tmp_path(tmp_path / "ranges" / "group-000000", r)
        assert payload.simulate(r, output) == r.n_events
        events = rootio.read_events(output)
        assert list(events["event_number"]) == list(r.event_numbers)
        assert list(events["x"]) == [n * 10 + 7 for n in r.event_numbers]  # copied, not made
        log = (output.parent / f"{r.id}.log").read_text()
        assert f"{r.n_events} events from {path} after {skip}" in log


def test_range_input_values(tmp_path: Path) -> None:
    params = CommandParams(simulate="tf --in {input} --skip {skip} --n {n_events} {output}")
    r = reading(make_range(1005, 1014), "/data/HITS.merge-000003.root", 5)
    values = simulate_values(params, r, tmp_path / "o.root", tmp_path)
    assert (values["input"], values["skip"], values["n_events"]) == (r.input, 5, 10)
    assert (values["first_event"], values["last_event"]) == (1005, 1014)
    # the old campaign-level input is unchanged for ranges without one
    old = CommandParams(simulate=params.simulate, input="/d/EVNT.root", input_first_event=1000)
    values = simulate_values(old, make_range(1005, 1014), tmp_path / "o.root", tmp_path)
    assert (values["input"], values["skip"], values["n_events"]) == ("/d/EVNT.root", 5, 10)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"input": "/d/EVNT.root"}, "input /d/EVNT.root"),
        ({"input_first_event": 100}, "input_first_event 100"),
    ],
)
def test_range_input_and_the_input_parameter_is_fatal(
    tmp_path: Path, read_tf: str, params: dict, named: str
) -> None:
    payload = command(simulate=f"{read_tf} {SIM_TEMPLATE}", **params)
    merged = input_file(tmp_path / "gen.root", 0, 9)
    r = reading(make_range(0, 4), merged, 0)
    out = tmp_path / "out"
    with pytest.raises(FatalPayloadError) as info:
        payload.simulate(r, out / "o.root")
    assert str(merged) in str(info.value) and named in str(info.value)
    assert not out.exists()  # refused before anything was made or run


def test_input_placeholder_without_any_input_fails_the_range(tmp_path: Path, read_tf: str) -> None:
    """Loads (a chain step's ranges bring the file); a range without one is fatal."""
    payload = command(simulate=f"{read_tf} {SIM_TEMPLATE}")
    out = tmp_path / "out"
    with pytest.raises(FatalPayloadError, match=r"uses \{input\} but range c-0-4 has no input"):
        payload.simulate(make_range(0, 4), out / "o.root")
    assert not out.exists()


def test_reading_past_the_input_fails_the_range(tmp_path: Path, read_tf: str) -> None:
    """The transform's own refusal (a wrong skip) is a failed range with its message."""
    payload = command(simulate=f"{read_tf} {SIM_TEMPLATE}")
    merged = input_file(tmp_path / "gen.root", 0, 9)
    r = reading(make_range(8, 12), merged, 8)
    with pytest.raises(PayloadError, match=r"events 8\.\.12 not in"):
        payload.simulate(r, tmp_path / "o.root")


#: Stand-ins for the ATLAS transforms of docs/chains.md, one script under each name:
#: ``Gen_tf.py`` makes events ``--firstEvent`` onwards, ``Sim_tf.py`` and ``Reco_tf.py``
#: copy ``--maxEvents`` events after ``--skipEvents`` of their input, the ``*Merge_tf.py``
#: concatenate their inputs; each writes jobReport.json and ignores the other options.
ATLAS_TF = """
import argparse, json, pathlib, sys
import numpy as np
from parsl_es import rootio
name = pathlib.Path(sys.argv[0]).name
p = argparse.ArgumentParser()
for kind in ("EVNT", "HITS", "AOD"):
    p.add_argument(f"--input{kind}File", dest="inputs", nargs="+")
    p.add_argument(f"--output{kind}File", f"--output{kind}_MRGFile", dest="output")
p.add_argument("--firstEvent", type=int)
p.add_argument("--skipEvents", type=int, default=0)
p.add_argument("--maxEvents", type=int, default=-1)
a, _ = p.parse_known_args()
if name == "Gen_tf.py":
    numbers = np.arange(a.firstEvent, a.firstEvent + a.maxEvents, dtype=np.int64)
    columns = {"event_number": numbers, "x": numbers * 10 + 7}
else:
    read = [rootio.read_events(pathlib.Path(path)) for path in a.inputs]
    columns = {k: np.concatenate([np.asarray(c[k]) for c in read]) for k in read[0]}
    if not name.endswith("Merge_tf.py"):
        stop = a.skipEvents + a.maxEvents
        assert len(a.inputs) == 1 and stop <= len(columns["event_number"]), sys.argv
        columns = {k: v[a.skipEvents:stop] for k, v in columns.items()}
rootio.write_events(pathlib.Path(a.output), columns)
pathlib.Path("jobReport.json").write_text(json.dumps({"exitCode": 0}))
print(name, len(columns["event_number"]), "events")
"""


def atlas_chain_payloads(tmp_path: Path) -> dict[str, CommandPayload]:
    """The ATLAS section's steps, run by stand-ins: its templates as written, with the
    release set-up replaced by one that puts the stand-ins first on PATH."""
    text = (Path(__file__).parent.parent / "docs" / "chains.md").read_text()
    section = text[text.index("## The chain with ATLAS transforms") :]
    block = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    chain = yaml.safe_load(block)["chain"]
    bin_dir = tmp_path / "release" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("Gen_tf.py", "Sim_tf.py", "Reco_tf.py"):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{ATLAS_TF}")
    for kind in ("EVNT", "HITS", "AOD"):
        (bin_dir / f"{kind}Merge_tf.py").write_text(f"#!{sys.executable}\n{ATLAS_TF}")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    setup = tmp_path / "release" / "release_setup.sh"
    setup.write_text(f"export PATH={shlex.quote(str(bin_dir))}:$PATH\n")
    payloads = {}
    for step, spec in chain.items():
        params = {k: v for k, v in spec["payload"].items() if k != "name"}
        assert params.pop("container")["runtime"] == "shifter"  # no container here
        for field in ("simulate", "merge"):
            params[field] = params[field].replace("/release_setup.sh", str(setup))
        params |= {"tree": "events", "event_number_branch": "event_number"}  # the stand-ins'
        payloads[step] = command(**params)
    return payloads


@pytest.mark.integration  # starts real transforms for seconds
def test_the_atlas_chain_templates_of_the_docs(tmp_path: Path) -> None:
    """docs/chains.md's templates, run with stand-in transforms: the bash set-up wrapper
    passes every filled-in argument through, {input}/{skip}/{n_events} pick each range's
    events of the earlier step's merged file, and the merge templates read {inputs_file}."""
    payloads = atlas_chain_payloads(tmp_path)
    assert list(payloads) == ["evgen", "simul", "reco"]
    files: dict[str, list[Path]] = {}
    previous = None
    for step, payload in payloads.items():
        ranges = [make_range(first, first + 3, campaign=step) for first in range(1, 17, 4)]
        outputs = []
        for r in ranges:
            if previous is not None:  # the engine's part: which merged file, what skip
                source = (r.first_event - 1) // 8
                r = reading(r, files[previous][source], (r.first_event - 1) % 8)
            output = engine_tmp_path(tmp_path / step / "ranges" / "group-000000", r)
            assert payload.simulate(r, output) == 4
            outputs.append(output)
        files[step] = []
        for group in (0, 1):  # two merged files of 8 events each
            merged = tmp_path / step / "merged" / f"{step}.merge-{group:06d}.root"
            merged.parent.mkdir(exist_ok=True)
            assert payload.merge(outputs[2 * group : 2 * group + 2], merged) == 8
            files[step].append(merged)
        previous = step
    numbers = np.concatenate([rootio.read_events(f)["event_number"] for f in files["reco"]])
    xs = np.concatenate([rootio.read_events(f)["x"] for f in files["reco"]])
    assert list(numbers) == list(range(1, 17))
    assert list(xs) == [n * 10 + 7 for n in range(1, 17)]  # generated once, copied on


# --- failures ------------------------------------------------------------------------------


def test_nonzero_exit_is_transient_and_logged(tmp_path: Path, fake_tf: str) -> None:
    payload = command(simulate=f"{fake_tf} --output {{output}} --exit-code 3")
    r = make_range(0, 1)
    log = tmp_path / f"{r.id}.log"
    for attempt in (1, 2):
        with pytest.raises(PayloadError) as info:
            payload.simulate(r, tmp_path / f"a{attempt}.root")
        assert info.value.transient
        message = str(info.value)
        assert "exited with code 3" in message and str(log) in message
        assert "marker-1234" in message  # the tail of the log
    text = log.read_text()
    assert text.count("marker-1234") == 2 and text.count("=== exit code 3") == 2


def test_missing_executable_is_fatal(tmp_path: Path) -> None:
    payload = command(simulate="no-such-transform_tf.py --outputHITSFile {output}")
    with pytest.raises(FatalPayloadError, match=r"no-such-transform_tf\.py"):
        payload.setup()
    with pytest.raises(FatalPayloadError, match=r"no-such-transform_tf\.py"):
        payload.simulate(make_range(0, 1), tmp_path / "o.root")
    assert list(tmp_path.iterdir()) == []  # no work directory left behind


def test_missing_container_runtime_is_fatal(tmp_path: Path, fake_tf: str) -> None:
    payload = command(
        simulate=f"{fake_tf} --output {{output}}",
        container={"runtime": "apptainer", "image": "/images/none.sif"},
        env={"PATH": str(tmp_path)},  # certainly no apptainer here
    )
    with pytest.raises(FatalPayloadError, match="apptainer"):
        payload.setup()
    with pytest.raises(FatalPayloadError, match="apptainer"):
        payload.simulate(make_range(0, 1), tmp_path / "o.root")


@pytest.mark.integration  # starts real transforms for seconds
def test_job_report_exit_code(tmp_path: Path, fake_tf: str) -> None:
    template = f"{fake_tf} --output {{output}} --first 0 --last 1"
    bad = command(simulate=f"{template} --report-code 1", job_report="jobReport.json")
    with pytest.raises(PayloadError, match="exitCode 1: transform said no") as info:
        bad.simulate(make_range(0, 1), tmp_path / "bad.root")
    assert info.value.transient
    good = command(simulate=f"{template} --report-code 0", job_report="jobReport.json")
    assert good.simulate(make_range(0, 1), tmp_path / "good.root") == 2
    missing = command(simulate=template, job_report="jobReport.json")
    with pytest.raises(PayloadError, match="no job report"):
        missing.simulate(make_range(0, 1), tmp_path / "missing.root")


def test_output_not_created(tmp_path: Path, fake_tf: str) -> None:
    payload = command(simulate=f"{fake_tf} --output {{output}}")  # exits 0, writes nothing
    with pytest.raises(PayloadError, match="was not created"):
        payload.simulate(make_range(0, 1), tmp_path / "o.root")


def test_timeout_kills_the_command(tmp_path: Path, fake_tf: str) -> None:
    payload = command(simulate=f"{fake_tf} --output {{output}} --sleep 30", timeout_seconds=0.5)
    with pytest.raises(PayloadError, match="timed out"):
        payload.simulate(make_range(0, 1), tmp_path / "o.root")


# --- validation at load time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("tf --out {output} --evts {nevents}", r"unknown placeholder \{nevents\}.*allowed: .*"),
        ("tf --out {output", "bad braces"),
        ("tf --out '{output}", "cannot be split"),
        ("tf {} {output}", "not a plain name"),
        ("tf {output.name}", "not a plain name"),
        ("tf {output:d}", "cannot be filled in"),
        ("   ", "is empty"),
    ],
)
def test_bad_templates(template: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        CommandPayload.Params(simulate=template)


def test_merge_placeholders_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"\{skip\} in the merge template"):
        CommandPayload.Params(simulate="tf {output}", merge="m {inputs_file} {output} {skip}")
    CommandPayload.Params(
        simulate="tf {output} {skip:06d}", merge="m {inputs_file} {output} {n_inputs}"
    )


def test_other_tree_needs_a_merge_template() -> None:
    with pytest.raises(ValidationError, match="needs a merge template"):
        CommandPayload.Params(simulate="tf {output}", tree="CollectionTree")


def test_campaign_names_the_unknown_placeholder() -> None:
    campaign = {
        "name": "c",
        "events": 10,
        "events_per_range": 5,
        "events_per_merge": 10,
        "seed": 1,
        "payload": {"name": "command", "simulate": "Sim_tf.py --outputHITSFile {outptu}"},
    }
    with pytest.raises(UserError, match=r"payload.simulate: unknown placeholder \{outptu\}"):
        campaign_from_dict(campaign)


# --- containers ----------------------------------------------------------------------------


def test_shifter_argv(tmp_path: Path) -> None:
    spec = ContainerSpec(
        runtime="shifter",
        image="docker:atlas/athena:24.0",
        mounts=["/pscratch:/pscratch", "/cvmfs:/cvmfs"],
        args=["--module=cvmfs"],
    )
    assert container_argv(spec, tmp_path, {"A": "1"}) == [
        "shifter",
        "--image=docker:atlas/athena:24.0",
        "--volume=/pscratch:/pscratch",
        "--volume=/cvmfs:/cvmfs",
        "--module=cvmfs",
        "--",
    ]


def test_podman_hpc_argv() -> None:
    spec = ContainerSpec(runtime="podman-hpc", image="atlas/athena:24.0", mounts=["/p:/p"])
    assert container_argv(spec, Path("/p/w"), {"A": "1 2"}) == [
        "podman-hpc",
        "run",
        "--rm",
        "-v",
        "/p:/p",
        "-w",
        "/p/w",
        "-e",
        "A=1 2",
        "atlas/athena:24.0",
    ]


def test_apptainer_argv() -> None:
    spec = ContainerSpec(
        runtime="apptainer", image="/images/athena.sif", mounts=["/p"], args=["--cleanenv"]
    )
    assert container_argv(spec, Path("/p/w"), {}) == [
        "apptainer",
        "exec",
        "--bind",
        "/p",
        "--pwd",
        "/p/w",
        "--cleanenv",
        "/images/athena.sif",
    ]


def test_container_prefix_goes_before_the_command(tmp_path: Path) -> None:
    payload = command(
        simulate="Sim_tf.py --outputHITSFile {output}",
        container={"runtime": "shifter", "image": "docker:a/b:1", "mounts": ["/x:/x"]},
    )
    argv = payload._full_argv(["Sim_tf.py", "--outputHITSFile", "/x/o.root"], tmp_path)
    assert argv == [
        "shifter",
        "--image=docker:a/b:1",
        "--volume=/x:/x",
        "--",
        "Sim_tf.py",
        "--outputHITSFile",
        "/x/o.root",
    ]


def test_unknown_runtime_rejected() -> None:
    with pytest.raises(ValidationError, match="runtime"):
        CommandPayload.Params(simulate="tf {output}", container={"runtime": "docker", "image": "x"})
