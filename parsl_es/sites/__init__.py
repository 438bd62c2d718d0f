"""Sites: a named YAML file that maps node types to Parsl executors.

A site has one HighThroughputExecutor per node type (labelled with the node
type's name: ``cpu``, ``gpu``, ...), each with its provider (the machine the
driver runs on, or Slurm), launcher, workers and accelerators, and says which
node types run each step by default. ``local`` is the default: one executor with
a LocalProvider on 127.0.0.1 and as many workers as there are cores.

One job per module, dependencies one way: ``spec`` (the models) <- ``loading``
(files and ``--set``), ``build`` (the Parsl Config, Parsl imported lazily) <-
``checks`` (what a site still needs here). This package re-exports the names
the rest of the project imports from ``parsl_es.sites``.
"""

from __future__ import annotations

from parsl_es.sites.build import (
    _put_environment_on_path,
    build_config,
    build_executor,
    resolve_address,
)
from parsl_es.sites.checks import check_site
from parsl_es.sites.loading import apply_override, load_site, resolve_site_path, shipped_sites
from parsl_es.sites.spec import (
    WALLTIME,
    GlobusComputeSpec,
    LauncherSpec,
    LocalProviderSpec,
    NodeTypeSpec,
    ProviderSpec,
    SiteSpec,
    SiteSteps,
    SlurmProviderSpec,
    walltime_seconds,
)

__all__ = [
    "WALLTIME",
    "GlobusComputeSpec",
    "LauncherSpec",
    "LocalProviderSpec",
    "NodeTypeSpec",
    "ProviderSpec",
    "SiteSpec",
    "SiteSteps",
    "SlurmProviderSpec",
    "_put_environment_on_path",
    "apply_override",
    "build_config",
    "build_executor",
    "check_site",
    "load_site",
    "resolve_address",
    "resolve_site_path",
    "shipped_sites",
    "walltime_seconds",
]
