"""Container runtimes of HPC centres: shifter, podman-hpc, apptainer.

Used to run an experiment's transforms inside its image (the ``command``
payload) and to run a node type's whole worker pool inside an image (sites).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ContainerSpec(BaseModel):
    """The container a transform runs in.

    The container must see the output directory at the same path as the host
    (add it to ``mounts``, e.g. ``/pscratch:/pscratch``): the transform writes
    ``{output}`` there, and its work directory lies beside the output.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["shifter", "podman-hpc", "apptainer"] = Field(
        description="Container runtime on the compute nodes."
    )
    image: str = Field(
        min_length=1, description="Image, e.g. docker:atlas/athena:24.0 (shifter) or a .sif file."
    )
    mounts: list[str] = Field(
        default_factory=list,
        description="Bind mounts SRC:DST[:OPTIONS]; must include the output directory.",
    )
    args: list[str] = Field(
        default_factory=list, description="Extra runtime arguments, placed before the image."
    )

    @field_validator("mounts")
    @classmethod
    def _mounts_not_empty(cls, value: list[str]) -> list[str]:
        if any(not m for m in value):
            raise ValueError("a mount must not be empty")
        return value


def container_argv(
    spec: ContainerSpec, workdir: Path | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The argument prefix that runs a command inside the container.

    shifter and apptainer pass the caller's environment and working directory
    through; podman-hpc does neither, so it is given ``-w`` and ``-e`` for them.
    """
    env = env or {}
    if spec.runtime == "shifter":
        volumes = [f"--volume={m}" for m in spec.mounts]
        return ["shifter", f"--image={spec.image}", *volumes, *spec.args, "--"]
    if spec.runtime == "podman-hpc":
        volumes = [arg for m in spec.mounts for arg in ("-v", m)]
        envs = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        return [
            "podman-hpc",
            "run",
            "--rm",
            *volumes,
            *(["-w", str(workdir)] if workdir else []),
            *envs,
            *spec.args,
            spec.image,
        ]
    binds = [arg for m in spec.mounts for arg in ("--bind", m)]
    pwd = ["--pwd", str(workdir)] if workdir else []
    return ["apptainer", "exec", *binds, *pwd, *spec.args, spec.image]
