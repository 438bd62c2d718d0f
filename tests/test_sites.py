"""Site files become Parsl configurations: one HTEX per node type, Slurm fields as sbatch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider
from typer.testing import CliRunner

from parsl_es.cli.main import app
from parsl_es.errors import UserError
from parsl_es.sites import build_config, check_site, load_site, shipped_sites

runner = CliRunner()
LOOPBACK = ["address=127.0.0.1"]  # Perlmutter's hsn0 does not exist here


def executors(site, tmp_path: Path) -> dict[str, HighThroughputExecutor]:
    config = build_config(site, tmp_path)
    return {ex.label: ex for ex in config.executors}


@pytest.mark.parametrize("name", sorted(shipped_sites()))
def test_every_shipped_site_builds_one_executor_per_node_type(name, tmp_path):
    site = load_site(name, LOOPBACK)
    built = executors(site, tmp_path)
    assert set(built) == set(site.node_types)
    for label, ex in built.items():
        assert isinstance(ex, HighThroughputExecutor)
        assert ex.max_workers_per_node == site.node_types[label].workers()
        # one lost block must not mark the executor bad for the rest of the campaign
        assert ex.block_error_handler.__name__ == "noop_error_handler"


def test_perlmutter_node_types(tmp_path):
    site = load_site("perlmutter", [*LOOPBACK, "account=m1234", "gpu.provider.account=m1234_g"])
    built = executors(site, tmp_path)
    cpu, gpu = built["cpu"], built["gpu"]
    assert isinstance(cpu.provider, SlurmProvider) and isinstance(gpu.provider, SlurmProvider)
    assert cpu.provider.constraint == "cpu" and gpu.provider.constraint == "gpu"
    assert cpu.provider.account == "m1234" and gpu.provider.account == "m1234_g"
    assert cpu.provider.qos == "regular" and cpu.provider.exclusive
    assert cpu.max_workers_per_node == 128
    # one worker per A100, each given its own GPU
    assert gpu.max_workers_per_node == 4
    assert gpu.available_accelerators == ["0", "1", "2", "3"]
    assert isinstance(gpu.provider.launcher, SrunLauncher)
    assert "--gpus-per-node=4" in gpu.provider.launcher.overrides
    assert site.steps.simulate == ["gpu", "cpu"]
    # workers stop taking ranges drain_margin_seconds before the block's 2 h walltime
    assert cpu.drain_period == 2 * 3600 - 600


def test_local_site_needs_nothing(tmp_path):
    site = load_site("local")
    ex = executors(site, tmp_path)["local"]
    assert isinstance(ex.provider, LocalProvider)
    assert isinstance(ex.provider.launcher, SingleNodeLauncher)
    assert ex.drain_period is None
    assert check_site(site) == ([], [])


def test_slurm_fields_reach_the_batch_script(tmp_path):
    site = load_site(
        "slurm",
        [
            "partition=compute",
            "account=phys",
            "qos=high",
            "walltime=03:30:00",
            "scheduler_options=['#SBATCH --mail-type=END']",
            "worker_init=source /opt/env/bin/activate",
            "cpu.provider.nodes_per_block=4",
            "cpu.max_blocks=2",
        ],
    )
    provider = executors(site, tmp_path)["cpu"].provider
    assert (provider.partition, provider.account, provider.qos) == ("compute", "phys", "high")
    assert provider.walltime == "03:30:00" and provider.nodes_per_block == 4
    assert provider.max_blocks == 2
    assert "#SBATCH --mail-type=END" in provider.scheduler_options
    assert provider.worker_init.strip() == "source /opt/env/bin/activate"


def test_container_wraps_the_worker_pool(tmp_path):
    site = load_site(
        "perlmutter",
        [*LOOPBACK, "gpu.container={runtime: shifter, image: 'docker:me/es:1'}"],
    )
    built = executors(site, tmp_path)
    assert built["gpu"].launch_cmd.startswith("shifter --image=docker:me/es:1 -- ")
    assert "process_worker_pool.py" in built["gpu"].launch_cmd
    assert "shifter" not in built["cpu"].launch_cmd


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("acount=m1", "did you mean 'account'"),
        ("walltime=2 hours", "walltime"),
        ("gpu.provider.max_blocks=0", "max_blocks"),
        ("justakey", "expected KEY=VALUE"),
        ("steps.simulate=[cpu, tpu]", "unknown node type 'tpu'"),
    ],
)
def test_bad_overrides_name_the_field(override, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        load_site("perlmutter", [override])


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["empty"]),
        (
            "name: x\nnode_types: {}\nsteps: {simulate: [a], merge: a, validate: a}\n",
            ["node_types"],
        ),
        (
            "name: x\nnode_types:\n  cpu: {workerz_per_node: 2}\n"
            "steps: {simulate: [cpu], merge: cpu, validate: cpu}\n",
            ["workerz_per_node", "workers_per_node"],
        ),
        (
            "name: x\nnode_types:\n  cpu: {}\n"
            "steps: {simulate: [gpu], merge: cpu, validate: cpu}\n",
            ["unknown node type 'gpu'"],
        ),
        (
            "name: x\nnode_types:\n  cpu:\n    provider: {kind: slurm, partiton: cpu}\n"
            "steps: {simulate: [cpu], merge: cpu, validate: cpu}\n",
            [":4:", "node_types.cpu.provider: unknown key 'partiton'", "did you mean 'partition'"],
        ),
        ("name: [unclosed\n", ["YAML"]),
    ],
)
def test_bad_site_files_name_the_file(tmp_path, text, needles):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_site(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_cli_sites_show_and_check():
    shown = runner.invoke(app, ["sites", "show", "perlmutter", "--set", "account=m9"])
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.output)
    assert resolved["node_types"]["gpu"]["provider"]["account"] == "m9"
    assert resolved["node_types"]["gpu"]["accelerators"] == 4

    missing = runner.invoke(app, ["sites", "check", "perlmutter"])
    assert missing.exit_code == 1
    assert "account is not set" in missing.output and "hsn0" in missing.output

    ready = runner.invoke(app, ["sites", "check", "local"])
    assert ready.exit_code == 0 and "ready" in ready.output

    unknown = runner.invoke(app, ["sites", "show", "perlmuter"])
    assert unknown.exit_code == 2
    assert "did you mean 'perlmutter'" in unknown.output


def test_a_step_on_a_globus_compute_endpoint(tmp_path, monkeypatch):
    """Merges at a site with the storage: that node type is Parsl's GlobusComputeExecutor."""
    from parsl.executors import GlobusComputeExecutor

    monkeypatch.setenv("PARSL_ES_COMPUTE_CLIENT", "tests.globus_offline:unconnected_client")
    endpoint = "2b1e7d0c-4a57-4c6e-9a55-1f0e3e9a1b2c"
    site_file = tmp_path / "split.yaml"
    site_file.write_text(
        "name: split\n"
        "node_types:\n"
        "  cpu: {provider: {kind: local}}\n"
        f"  store: {{provider: {{kind: globus-compute, endpoint_id: '{endpoint}', workers: 2}}}}\n"
        "steps: {simulate: [cpu], merge: store, validate: cpu}\n"
    )
    site = load_site(site_file)
    built = executors(site, tmp_path)
    store = built["store"]
    assert isinstance(store, GlobusComputeExecutor)
    assert str(store.executor.endpoint_id) == endpoint
    assert site.node_types["store"].workers() == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(site_file.read_text().replace(endpoint, "not-a-uuid"))
    with pytest.raises(UserError, match="endpoint_id"):
        load_site(bad)


def test_worker_traffic_is_encrypted_off_loopback_unless_switched_off():
    local = load_site("local").node_types["local"]
    assert local.encrypted is None and not local.effective_encrypted
    for name in ("perlmutter", "slurm"):
        site = load_site(name, ["account=m1234"] if name == "perlmutter" else None)
        assert all(nt.effective_encrypted for nt in site.node_types.values()), name
    forced = load_site("local", ["local.encrypted=true"]).node_types["local"]
    assert forced.effective_encrypted
    [executor] = build_config(
        load_site("local", ["local.encrypted=true"]), Path("/tmp/x")
    ).executors
    assert executor.encrypted
    slurm = load_site("local-slurm")
    assert [nt.effective_encrypted for nt in slurm.node_types.values()] == [False, True]


def test_sites_check_warns_about_open_and_unencrypted_addresses():
    _, warnings = check_site(load_site("local", ["local.address=0.0.0.0"]))
    assert any("listens on every interface" in w for w in warnings), warnings
    _, warnings = check_site(
        load_site("local", ["local.address=10.1.2.3", "local.encrypted=false"])
    )
    assert any("not encrypted" in w for w in warnings), warnings
    _, warnings = check_site(load_site("local"))
    assert not any("encrypted" in w or "every interface" in w for w in warnings)


def test_sites_show_prints_the_encryption_in_force_for_every_node_type():
    shown = runner.invoke(app, ["sites", "show", "local-slurm"])
    assert shown.exit_code == 0, shown.output
    node_types = yaml.safe_load(shown.output)["node_types"]
    assert {k: v["encrypted"] for k, v in node_types.items()} == {"cpu": False, "gpu": True}


@pytest.mark.integration
@pytest.mark.xdist_group("console")
def test_an_encrypted_loopback_site_runs_a_campaign(console_campaign):
    """The console campaign (tests/conftest.py) runs with --set local.encrypted=true."""
    from tests.helpers import assert_every_event_once

    _, out, done = console_campaign
    assert done.returncode == 0, done.stdout + done.stderr
    assert_every_event_once(out, 0, 30)
    certificates = list((out / "logs" / "parsl").rglob("certificates"))
    assert certificates and any(any(d.iterdir()) for d in certificates)
