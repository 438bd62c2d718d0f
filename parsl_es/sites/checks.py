"""What a valid site still needs before it can run from this machine.

Validation says a site file is well formed; these checks look at the machine
(Slurm tools, SDKs, container runtimes, network interfaces) so a run fails
here, with advice, rather than in a batch job later.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import NamedTuple

from parsl_es.errors import UserError
from parsl_es.sites.build import resolve_address
from parsl_es.sites.spec import GlobusComputeSpec, SiteSpec, SlurmProviderSpec, walltime_seconds


class Problem(NamedTuple):
    """What stops a site from running here, and the field of the site it is about."""

    loc: tuple  # () when it is about this machine, not one field
    text: str


def check_site(site: SiteSpec) -> tuple[list[str], list[str]]:
    """What stops this site from running here (problems), and what looks risky (warnings)."""
    problems, warnings = site_problems(site)
    return [p.text for p in problems], warnings


def site_problems(site: SiteSpec) -> tuple[list[Problem], list[str]]:
    """``check_site``, each problem with the field it is about."""
    problems: list[Problem] = []
    warnings: list[str] = []
    uses_slurm = False
    for name, nt in site.node_types.items():
        p = nt.provider
        here = ("node_types", name)
        if isinstance(p, SlurmProviderSpec):
            uses_slurm = True
            if p.account_required and not p.account:
                problems.append(
                    Problem(
                        (*here, "provider"),
                        f"node type {name}: provider.account is not set and this site requires "
                        "one (--set account=YOUR_ACCOUNT)",
                    )
                )
            if not p.worker_init:
                warnings.append(
                    f"node type {name}: no worker_init; the batch job must find this Python "
                    f"environment ({Path(sys.executable).parent}) on its own"
                )
            if nt.drain_margin_seconds >= walltime_seconds(p.walltime):
                problems.append(
                    Problem(
                        (*here, "drain_margin_seconds"),
                        f"node type {name}: drain_margin_seconds ({nt.drain_margin_seconds}) is "
                        f"not shorter than the walltime ({p.walltime})",
                    )
                )
        if isinstance(p, GlobusComputeSpec):
            try:
                import globus_compute_sdk  # noqa: F401
            except ImportError:
                problems.append(
                    Problem(
                        (*here, "provider"),
                        f"node type {name}: Globus Compute SDK not installed "
                        "(pip install 'parsl-es[globus]')",
                    )
                )
        if nt.container and not shutil.which(nt.container.runtime):
            warnings.append(
                f"node type {name}: container runtime '{nt.container.runtime}' is not on PATH here"
            )
        if nt.address in ("0.0.0.0", "::"):
            warnings.append(
                f"node type {name}: address {nt.address} listens on every interface of this "
                "host; name the one workers use (e.g. interface:hsn0)"
            )
        if not nt.loopback and not nt.effective_encrypted:
            warnings.append(
                f"node type {name}: worker traffic on {nt.address} is not encrypted: anyone "
                "who reaches the port can pose as a worker pool (remove encrypted: false)"
            )
        if nt.address.startswith("interface:"):
            problem = _interface_problem(nt.address)
            if problem:
                problems.append(Problem((*here, "address"), f"node type {name}: {problem}"))
    if uses_slurm:
        for tool in ("sbatch", "squeue", "scancel"):
            if not shutil.which(tool):
                problems.append(
                    Problem((), f"'{tool}' is not on PATH: Slurm node types cannot start blocks")
                )
    return problems, warnings


def _interface_problem(address: str) -> str | None:
    """Why workers cannot be given this interface's address here (None: they can)."""
    ifname = address.split(":", 1)[1]
    # Looked up without Parsl first: importing it costs a second or two.
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        names = {ifname}  # cannot list them here: let Parsl's lookup say
    if ifname not in names:
        return f"address: no network interface '{ifname}' on this host"
    try:
        resolve_address(address)
    except UserError as exc:
        return exc.message
    return None
