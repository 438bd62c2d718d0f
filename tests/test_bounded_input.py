"""Input that is small on disk but huge in memory or in range is refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from parsl_es.campaign import load_campaign
from parsl_es.cli.main import app
from parsl_es.errors import UserError
from parsl_es.yamlfile import MAX_NODES
from tests.helpers import assert_usage_error, write_campaign

runner = CliRunner()


def billion_laughs() -> str:
    """9 levels of 9 aliases: a few hundred bytes that expand to 9**9 strings."""
    out = ["l0: &l0 [" + ",".join(["lol"] * 9) + "]"]
    for level in range(1, 10):
        refs = ",".join([f"*l{level - 1}"] * 9)
        out.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(out) + "\n"


def test_billion_laughs_is_refused_fast_small_and_writes_nothing(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 1000
    out = tmp_path / "out"
    # In a fresh interpreter, so the peak RSS measured is this refusal's alone.
    script = textwrap.dedent(
        f"""
        import json, resource, time
        from typer.testing import CliRunner
        from parsl_es.cli.main import app
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        result = CliRunner().invoke(app, ["submit", {str(bomb)!r}, "-o", {str(out)!r}])
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"code": result.exit_code, "output": result.output,
                          "elapsed": elapsed, "rss_kib": after - before}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 2, report
    text = report["output"].strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert "bomb.yaml" in text and "YAML alias expansion" in text and str(MAX_NODES) in text
    assert report["elapsed"] < 2.0, report
    assert report["rss_kib"] < 200 * 1024, report  # ru_maxrss is in KiB on Linux
    assert not out.exists()


def test_billion_laughs_via_load_campaign(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    with pytest.raises(UserError, match="too many aliases/nodes"):
        load_campaign(bomb)


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: x\nloop: &a [1, *a]\n")
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "loop.yaml", "recursive alias")
    assert not (tmp_path / "o").exists()


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 20000 + "]" * 20000 + "\n")
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "deep.yaml", "nested too deeply")


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "huge.yaml", "bytes")
    assert not (tmp_path / "o").exists()


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: aliased
            events: &n 40
            events_per_range: 2
            events_per_merge: 10
            seed: *n
            payload: &p
              name: emulate
            steps:
              simulate: &nt local
              merge: *nt
            """
        )
    )
    spec = load_campaign(path)
    assert spec.seed == 40
    assert spec.payload.name == "emulate"
    assert spec.steps.merge == "local"


@pytest.mark.parametrize(
    "fields",
    [
        {"first_event": 10_000_000_000_000_000_000},
        {"first_event": 9_223_372_036_854_775_000, "events": 1000, "events_per_merge": 10},
    ],
)
def test_event_numbers_beyond_64_bits_are_refused(tmp_path, fields):
    path = write_campaign(tmp_path, "big", **fields)
    out = tmp_path / "out"
    result = runner.invoke(app, ["submit", str(path), "-o", str(out)])
    assert_usage_error(result, "big.yaml", "first_event", "2**63")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "first_event" in t)
    assert f"big.yaml:{line}:" in result.output
    assert not out.exists()


def test_last_event_at_the_limit_is_accepted(tmp_path):
    path = write_campaign(tmp_path, "edge", first_event=2**63 - 40, events=40)
    assert load_campaign(path).first_event == 2**63 - 40
