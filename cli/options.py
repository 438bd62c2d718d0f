"""Options that several ``es-run`` commands share."""

from __future__ import annotations

import math
from typing import Annotated

import typer


def _margin(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value:g}: seconds, a finite number >= 0")
    return value


SiteOpt = Annotated[str, typer.Option("--site", "-s", help="site name or site YAML file")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a site field: account=m1234, gpu.qos=debug, ..."),
]
WalltimeOpt = Annotated[
    str | None,
    typer.Option(
        "--walltime",
        help="the allocation ends this long from now ([D-]HH:MM:SS); "
        "default: SLURM_JOB_END_TIME inside a Slurm job",
    ),
]
EndOpt = Annotated[
    str | None, typer.Option("--end", help="the allocation ends at this time (ISO or epoch)")
]
MonitoringOpt = Annotated[
    bool,
    typer.Option(
        "--monitoring",
        help="record tasks and resource use with Parsl's MonitoringHub in DIR/monitoring.db "
        "(open with parsl-visualize)",
    ),
]
MarginOpt = Annotated[
    float,
    typer.Option(
        "--margin",
        help="seconds before the end by which started work must be done",
        callback=_margin,
    ),
]
