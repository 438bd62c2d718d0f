"""Parameter models shared by the payloads that generate events and those that simulate them.

``physics`` is generation plus detector; ``evgen`` is the generation alone and
``simul`` the detector alone. Each field is declared once here so the three
cannot drift apart (a default changed in one place changes it for all).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from parsl_es.payloads.base import PayloadParams
from parsl_es.payloads.physics.calo_backends import Device, Library


class GeneratorParams(PayloadParams):
    """Pythia 8's process and beams, and the run number stored with every event."""

    process: Literal["ttbar", "qcd", "minbias"] = Field(
        "ttbar", description="Hard process: top pairs, QCD dijets, or non-diffractive minimum bias."
    )
    ecm_gev: float = Field(13600.0, gt=0, description="Centre-of-mass energy in GeV.")
    pthat_min_gev: float = Field(
        20.0, ge=0, description="Minimum pT of the hard scattering in GeV (qcd only)."
    )
    run_number: int = Field(1, ge=0, description="Run number stored with every event.")
    pythia_settings: list[str] = Field(
        default_factory=list,
        description="Extra Pythia readString lines, applied after the built-in ones.",
    )


class DetectorParams(PayloadParams):
    """The detector's parameters and the run number: shared by physics and simul."""

    run_number: int = Field(1, ge=0, description="Run number stored with every event.")
    calo_quantum_gev: float = Field(
        0.05,
        gt=0,
        description="Energy of one calorimeter shower quantum in GeV; the calorimeter's cost "
        "scales as 1/quantum and its stochastic resolution as sqrt(quantum).",
    )
    noise_mev: float = Field(30.0, gt=0, description="Electronics noise per calorimeter cell, MeV.")
    device: Device = Field(
        "cpu",
        description="Where the calorimeter showers are sampled: cpu (numpy, reproducible bit "
        "by bit), gpu (torch or cupy on the worker's GPU; a worker without one fails the "
        "range), or auto (the GPU where the worker owns one, the CPU elsewhere).",
    )
    array_library: Library = Field(
        "auto",
        description="Library for the showers: auto (numpy on the CPU; torch, else cupy, on a "
        "GPU), numpy, torch (also on the CPU: the GPU build, checked on a CPU) or cupy.",
    )

    @model_validator(mode="after")
    def _device_and_library(self) -> DetectorParams:
        if self.array_library == "numpy" and self.device == "gpu":
            raise ValueError("array_library numpy runs on the CPU only; use device: cpu or auto")
        if self.array_library == "cupy" and self.device == "cpu":
            raise ValueError("array_library cupy runs on GPUs only; use device: gpu or auto")
        return self
