"""Chain campaigns in every front end: status, validate, report, notebook, run summary.

A complete three-step chain (gen -> sim -> rec) is made once on the simulated
backend (real ledger, real emulate files); tests that change it work on a copy.
"""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
from typer.testing import CliRunner

from parsl_es.cli.main import app
from parsl_es.engine.result import RunStatus
from parsl_es.ledger import LEDGER_NAME, Ledger
from tests.engine_helpers import backend, drive_chain, new_chain

STEPS = ("gen", "sim", "rec")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A complete chain, with the progress snapshots and result of its run."""
    out = new_chain(tmp_path_factory.mktemp("chain"))
    snapshots = []
    result = drive_chain(out, backend(run_functions=True), on_progress=snapshots.append)
    assert result.status is RunStatus.COMPLETE, result.message
    return out, result, snapshots


@pytest.fixture
def chain_copy(chain, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(chain[0], out)
    return out


def _sections(text: str) -> dict[str, str]:
    """The status text after each 'step NAME' heading, up to the next."""
    parts = {}
    for chunk in text.split("\nstep ")[1:]:
        parts[chunk.split(" ", 1)[0]] = chunk
    return parts


def test_status_prints_a_table_per_step_and_a_line_for_the_chain(chain):
    out = chain[0]
    done = invoke("status", str(out))
    assert done.exit_code == 0, done.output
    sections = _sections(done.output)
    assert list(sections) == list(STEPS)
    assert "payload emulate, makes its own events" in sections["gen"]
    assert "reads gen" in sections["sim"] and "reads sim" in sections["rec"]
    # each step's own counts: gen 40 ranges in 10 merges, sim 100 in 20, rec 40 in 5
    assert "merges validated: 10/10 passed" in sections["gen"]
    assert "merges validated: 20/20 passed" in sections["sim"]
    assert "merges validated: 5/5 passed" in sections["rec"]
    for name in STEPS:
        assert "events: 200/200 simulated" in sections[name]
        assert "campaign validation: passed" in sections[name]
    assert "chain: 3/3 steps validated" in done.output
    assert done.output.rstrip().endswith("state: COMPLETE")


def test_status_json_has_every_step(chain):
    data = json.loads(invoke("status", str(chain[0]), "--json").output)
    assert data["campaign"] == "chain" and data["chain"] == list(STEPS)
    assert data["complete"] is True
    assert list(data["steps"]) == list(STEPS)
    assert data["steps"]["sim"]["n_ranges"] == 100 and data["steps"]["rec"]["n_merges"] == 5
    assert data["steps"]["gen"]["ranges"]["merged"] == 40
    assert all(s["complete"] for s in data["steps"].values())
    assert data["events_done"] == 3 * 200


def test_status_of_a_chain_not_yet_run(tmp_path):
    out = new_chain(tmp_path)
    done = invoke("status", str(out))
    assert done.exit_code == 0, done.output
    assert list(_sections(done.output)) == list(STEPS)
    assert "chain: 0/3 steps validated; not yet complete: gen, sim, rec" in done.output
    assert "state: incomplete" in done.output
    assert json.loads(invoke("status", str(out), "--json").output)["complete"] is False
    report = invoke("report", str(out))  # nothing run yet: the page says so
    assert report.exit_code == 0, report.output
    assert "chain validation: <b>not yet run</b>" in (out / "report" / "index.html").read_text()


def _damage(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_validate_checks_every_step_and_records_each_verdict(chain_copy):
    out = chain_copy
    with Ledger.open(out / LEDGER_NAME) as ledger:  # forget the engine's verdicts
        for _, step in ledger.steps():
            step.set_meta("campaign_validation", "failed")
    done = invoke("validate", str(out))
    assert done.exit_code == 0, done.output
    for name, events in (("gen", 10), ("sim", 20), ("rec", 5)):
        assert f"step {name}: 200/200 events found in {events} merged files" in done.output
    assert "validation passed: every step (3)" in done.output
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert all(step.campaign_passed() for _, step in ledger.steps())
    for name in STEPS:  # each step's report in its own folder
        assert json.loads((out / name / "validation" / "campaign.json").read_text())["passed"]


def test_a_damaged_merged_file_fails_its_step_only_and_resume_redoes_it(chain_copy):
    out = chain_copy
    merged = sorted((out / "sim" / "merged").iterdir())[3]
    original = merged.read_bytes()
    _damage(merged)
    done = invoke("validate", str(out))
    assert done.exit_code == 1
    assert "step gen: 200/200 events found in 10 merged files; missing 0, duplicated 0; passed" in (
        done.output
    )
    assert "; FAILED" in done.output.split("step sim:")[1].splitlines()[0]
    assert "step rec: 200/200" in done.output and done.output.count("FAILED") == 2
    assert "problem: sim: " in done.output and "checksum" in done.output
    assert "validation FAILED in step sim;" in done.output and "problem: gen" not in done.output
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        verdicts = {name: step.meta("campaign_validation") for name, step in ledger.steps()}
        assert verdicts == {"gen": "passed", "sim": "failed", "rec": "passed"}
        bad = [m.group for m in ledger.step("sim").merge_records() if m.validation == "failed"]
        assert bad == [3]  # marked: resume redoes this merged file
        assert not ledger.step("sim").summary().complete
    assert json.loads(invoke("status", str(out), "--json").output)["complete"] is False

    result = drive_chain(out, backend(run_functions=True))  # what es-run resume runs
    assert result.status is RunStatus.COMPLETE, result.message
    assert merged.read_bytes() == original  # the same events, merged again
    assert invoke("validate", str(out)).exit_code == 0


def test_a_single_step_campaign_shows_no_steps(tmp_path):
    from tests.engine_helpers import drive, new_campaign

    out = new_campaign(tmp_path, events=40, events_per_merge=20)
    assert drive(out, backend(run_functions=True)).status is RunStatus.COMPLETE
    status = invoke("status", str(out))
    assert status.exit_code == 0 and "step " not in status.output and "chain" not in status.output
    assert "merges validated: 2/2 passed" in status.output
    assert "steps" not in json.loads(invoke("status", str(out), "--json").output)
    done = invoke("validate", str(out))
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "40/40 events found in 2 merged files; missing 0, duplicated 0",
        "validation passed",
    ]


@pytest.fixture
def simulated_site(monkeypatch):
    """es-run's runs go to the simulated backend (the site's node type 'local'), no Parsl."""
    from parsl_es import api
    from parsl_es.backends.simulated import SimNodeType

    real = api.execute

    def execute(prepared, **options):
        local = SimNodeType(workers=4, range_seconds=1.0)
        return real(prepared, **options, session=backend(run_functions=True, local=local))

    monkeypatch.setattr(api, "execute", execute)


def test_submit_and_resume_print_each_step(simulated_site, tmp_path):
    import yaml

    from tests.engine_helpers import chain_data

    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(chain_data(), sort_keys=False))
    out = tmp_path / "out"
    done = invoke("submit", str(path), "--output", str(out))
    assert done.exit_code == 0, done.output
    text = done.output
    assert "campaign chain: 200 events through a chain of 3 steps, site local" in text
    assert "  step gen: 40 ranges, 10 merge groups, payload emulate\n" in text
    assert "  step sim: 100 ranges, 20 merge groups, payload emulate, reads gen's merged" in text
    assert "  step rec: 40 ranges, 5 merge groups, payload emulate, reads sim's" in text
    # the run summary: the whole chain, then each step's own figures
    assert "this run: 600 events in 180 ranges, 35 merges" in text
    for name, ranges, merges in (("gen", 40, 10), ("sim", 100, 20), ("rec", 40, 5)):
        assert f"  step {name}: 200 events in {ranges} ranges, {merges} merges, " in text
    assert text.count("200/200 done, validated") == 3
    assert f"outputs: {out}/rec/merged (each step's in {out}/STEP/merged)" in text
    # the progress lines (no terminal here): totals and each step's count
    assert "600/600 events [gen 200/200, sim 200/200, rec 200/200]" in text

    again = invoke("resume", str(out))
    assert again.exit_code == 0, again.output
    assert "through a chain" not in again.output  # a resumed run does not plan again
    assert "this run: 0 events" in again.output and "  step sim: 0 events in 0 ranges" in (
        again.output
    )


def test_submit_of_a_single_step_campaign_prints_as_before(simulated_site, tmp_path):
    from tests.helpers import write_campaign

    path = write_campaign(tmp_path, "single", events=40, events_per_range=2, events_per_merge=20)
    out = tmp_path / "out"
    done = invoke("submit", str(path), "--output", str(out))
    assert done.exit_code == 0, done.output
    assert "events in 20 ranges, 2 merge groups, payload emulate, site local" in done.output
    assert f"outputs: {out}/merged   validation: {out}/validation" in done.output
    assert "  step " not in done.output
    assert "40/40 events     " in done.output  # no per-step counts after the total


def _handle(campaign, out):
    """A notebook handle whose campaign runs on the simulated backend (no Parsl)."""
    from parsl_es import api
    from parsl_es.backends.simulated import SimNodeType
    from parsl_es.notebook import CampaignHandle

    prepared = api.prepare(campaign, out, site="local")
    local = SimNodeType(workers=4, range_seconds=1.0)
    session = backend(run_functions=True, local=local)
    handle = CampaignHandle(prepared, session, {})
    seen = []
    handle._show = lambda force=False: seen.append(handle.progress)  # every snapshot shown
    return handle, seen


def test_notebook_handle_shows_a_chain_per_step(tmp_path):
    from tests.engine_helpers import chain_data

    handle, seen = _handle(chain_data(), tmp_path / "out")
    assert handle.steps == list(STEPS)
    sim_files = handle.step_merged_outputs("sim")  # asked for before the run: resolved by it
    handle.start(show=False)
    result = handle.wait(timeout=120)
    assert result.status is RunStatus.COMPLETE, result.message
    progress = handle.progress
    assert [p.step for p in progress.steps] == list(STEPS)
    assert [p.events_done for p in progress.steps] == [200, 200, 200]
    assert progress.events_total == 600
    # streaming is visible per step: a step had events done while the one it reads was not
    assert any(
        later.events_done > 0 and earlier.events_done < 200
        for p in seen
        if p is not None
        for earlier, later in itertools.pairwise(p.steps)
    )
    line = handle.summary_line()
    assert "600/600 events [gen 200/200, sim 200/200, rec 200/200]" in line
    page = handle._repr_html_()
    assert page.count("<progress") == 4  # the chain's and one per step
    assert "merges 20/20 (validated 20)" in page  # sim's own merges

    # the merged files: the chain's (its last step's) and any step's
    assert [f.result(timeout=5).parent for f in handle.merged_outputs] == [
        handle.output / "rec" / "merged"
    ] * 5
    assert len(sim_files) == 20 and all(f.done() for f in sim_files)
    assert sim_files[0].result().is_file() and sim_files[0].result().parent.parent.name == "sim"
    with pytest.raises(KeyError, match="no step 'nope'"):
        handle.step_merged_outputs("nope")

    status = handle.status()
    assert status.complete and list(status.steps) == list(STEPS)
    text = repr(status)
    assert text.startswith("chain chain: 3/3 steps complete (complete)")
    assert "  step sim: 200/200 events simulated" in text
    assert status.to_dict()["steps"]["rec"]["n_merges"] == 5
    assert "<b>step gen</b>" in status._repr_html_()


def test_notebook_handle_of_a_single_step_campaign_is_as_before(tmp_path):
    data = {
        "name": "one",
        "events": 40,
        "events_per_range": 2,
        "events_per_merge": 20,
        "seed": 3,
        "payload": {"name": "emulate"},
    }
    handle, _ = _handle(data, tmp_path / "out")
    handle.start(show=False)
    assert handle.wait(timeout=120).status is RunStatus.COMPLETE
    assert handle.steps == [] and handle.progress.steps == ()
    assert "40/40 events, " in handle.summary_line()
    assert handle._repr_html_().count("<progress") == 1
    files = [f.result(timeout=5) for f in handle.merged_outputs]
    assert [f.parent for f in files] == [handle.output / "merged"] * 2
    status = handle.status()
    assert repr(status).startswith("campaign one: 40/40 events simulated")
    assert status.to_dict()["complete"]


def test_report_has_a_section_per_step_and_a_lane_per_step(chain, tmp_path):
    import re

    from parsl_es import fileio
    from parsl_es.notebook import Report
    from parsl_es.report import collect
    from parsl_es.report_chain import step_kind

    out = chain[0]
    done = invoke("report", str(out), "--to", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    page = tmp_path / "r" / "index.html"
    text = page.read_text()
    assert "a chain of 3 steps" in text and "Steps gen -&gt; sim -&gt; rec" in text
    for png in ("timeline.png", "steps.png"):  # workers coloured by step; a lane per step
        assert (page.parent / png).stat().st_size > 2000 and f'src="{png}"' in text
    for name in STEPS:
        assert f'<h2 id="step-{name}">Step {name}</h2>' in text
        for figure in ("throughput", "durations", "failures"):
            png = f"{name}-{figure}.png"
            assert (page.parent / png).stat().st_size > 2000 and f'src="{png}"' in text
        assert f'src="physics-{name}-physics.png"' in text  # the step's validation pictures
        assert f"Merged outputs of step {name}" in text
    assert text.index("step-gen") < text.index("step-sim") < text.index("step-rec")
    # when each step's ranges ran: the steps stream (a step starts before the one it reads ends)
    spans = {
        m[0]: (float(m[1]), float(m[2]))
        for m in re.findall(
            r'data-step="(\w+)">.*?</td><td>[^<]*</td><td>passed</td><td>([\d.]+)</td>'
            r"<td>([\d.]+)</td>",
            text,
        )
    }
    assert list(spans) == list(STEPS)
    assert any(spans[b][0] < spans[a][1] for a, b in (("gen", "sim"), ("sim", "rec")))
    # the worker timeline: each step's ranges are bars of the step's own kind (colour)
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        for name, part in ledger.steps():
            tl, _ = collect(part, done=step_kind(name))
            kinds = {kind for bars in tl.bars.values() for _, _, kind in bars}
            assert step_kind(name) in kinds and "done" not in kinds
    # provenance per step; every output's checksum is the file's
    jr = json.loads((page.parent / "jobReport.json").read_text())
    assert jr["chain"] == list(STEPS) and jr["validation"] == {"passed": True}
    assert jr["steps"]["sim"]["inputs"]["input"] == "gen"
    assert jr["steps"]["sim"]["inputs"]["events_per_range"] == 2
    assert jr["steps"]["gen"]["seeds"]["campaign"] == 5  # the first step: the campaign seed
    assert jr["steps"]["sim"]["seeds"]["campaign"] != 5  # a later step: a stream of its own
    for name, merges in (("gen", 10), ("sim", 20), ("rec", 5)):
        outputs = jr["steps"][name]["outputs"]
        assert len(outputs) == merges and jr["steps"][name]["events_merged"] == 200
        for o in outputs:
            assert o["file"].startswith(f"{name}/merged/")
            assert fileio.adler32(out / o["file"]) == o["adler32"]
        assert jr["steps"][name]["validation"]["passed"]
    # the notebook's inline report: every picture, in page order
    images = [p.name for p in Report(page).images()]
    assert images[:3] == ["timeline.png", "steps.png", "gen-throughput.png"]
    assert len(images) == 2 + 3 * 4


def test_a_remote_chain_brings_back_each_steps_summary(simulated_site, tmp_path):
    """What the endpoint's function returns for a chain (run here, on the simulated backend)."""
    import base64

    from parsl_es.remote import run_campaign_remotely, versions
    from tests.engine_helpers import chain_data

    got = run_campaign_remotely(chain_data(), str(tmp_path / "out"), "local", [], versions())
    assert got["result"]["status"] == "complete"
    assert got["summary"]["chain"] == list(STEPS) and got["summary"]["complete"]
    assert got["summary"]["steps"]["sim"]["n_merges"] == 20
    assert got["job_report"]["chain"] == list(STEPS)
    assert base64.b64decode(got["timeline_png"]).startswith(b"\x89PNG")


def test_status_lists_the_shared_transforms_once(chain, capsys):
    """Service mode: the steps share their workers' transforms; the table comes once."""
    from dataclasses import replace

    from parsl_es.cli.chain_output import print_chain_status

    with Ledger.open(chain[0] / LEDGER_NAME, readonly=True) as ledger:
        campaign = ledger.campaign_json()
        starts = {"starts": 2, "restarts": 1, "init_seconds": 3.0, "mean_init_seconds": 1.5}
        steps = [
            (name, replace(part.summary(), transforms={"node1:0": starts}))
            for name, part in ledger.steps()
        ]
    print_chain_status(chain[0], campaign, steps, as_json=False)
    text = capsys.readouterr().out
    assert text.count("transforms (service mode) by worker") == 1
    assert text.index("transforms (service mode)") > text.index("step rec")
    assert text.count("simulated by node type") == 3  # each step's own


def test_the_live_progress_bar_has_a_bar_per_step(chain):
    """On a terminal: the chain's bar (every step's events), then one bar per step."""
    import io
    import re

    from rich.console import Console

    from parsl_es.cli.progress import ProgressDisplay

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    with ProgressDisplay(console, "chain") as display:
        for snapshot in chain[2]:
            display(snapshot)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())  # no cursor moves
    lines = [line for line in plain.splitlines() if line.strip()]
    last = max(i for i, line in enumerate(lines) if line.startswith("chain "))
    lines = lines[last : last + 4]
    assert "100% 600/600 events " in lines[0] and "merges 35/35" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == list(STEPS)
    assert "200/200 events" in lines[2] and "merges 20/20 (validated 20)" in lines[2]
