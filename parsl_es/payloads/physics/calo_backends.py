"""Where the calorimeter showers are sampled: numpy on the CPU, or torch / cupy on a GPU.

The calorimeter is half of the physics payload's time per event (millions of
Poisson quanta spread over 70,000 cells). Its sampling is written once, against a
handful of array operations, and runs on whichever library a worker has: numpy
(the bit-reproducible reference), torch (CPU or CUDA) or cupy (CUDA). A GPU build
draws different random numbers from numpy, so its events are correct in
distribution, not bit by bit: validation checks them statistically
(see ``reproduction.py``).

Every event records the backend that made it (``calo_backend``, one code per
backend below), so validation knows which events to compare by hash and which
by statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from parsl_es.payloads.base import FatalPayloadError

Device = Literal["auto", "cpu", "gpu"]
Library = Literal["auto", "numpy", "torch", "cupy"]

#: Stored per event in the ``calo_backend`` branch.
BACKEND_CODES = {"numpy": 0, "torch-cpu": 1, "torch-cuda": 2, "cupy-cuda": 3}
BACKEND_NAMES = {code: name for name, code in BACKEND_CODES.items()}
#: The backend whose output is reproducible bit by bit.
REFERENCE = "numpy"


@dataclass(frozen=True, slots=True)
class LayerGeometry:
    """What the sampling needs of a calorimeter layer (plain numbers)."""

    n_eta: int
    n_phi: int
    eta_max: float
    deta: float
    dphi: float
    core_fraction: float
    core_mm: float
    tail_mm: float

    @property
    def n_cells(self) -> int:
        return self.n_eta * self.n_phi


@dataclass(frozen=True, slots=True)
class LayerInput:
    """One event's particles reaching one layer, prepared on the CPU (float64 arrays)."""

    energy: np.ndarray  # shower energy per particle, GeV
    eta: np.ndarray  # impact point
    phi: np.ndarray
    r_imp: np.ndarray  # transverse radius of the impact, mm
    mip: np.ndarray  # point-like (muon) deposit per particle, GeV


class CaloBackend:
    """Samples showers and noise of one layer; returns the cells above threshold.

    Subclasses supply the array operations; ``layer_cells`` is the algorithm,
    identical on every backend.
    """

    name: str = REFERENCE

    @property
    def code(self) -> int:
        return BACKEND_CODES[self.name]

    def event_rng(self, host_rng: np.random.Generator, seed: int) -> Any:
        """The generator for this event's showers: numpy continues the host stream."""
        return host_rng

    # --- array operations (numpy; cupy shares them through ``xp``) -----------------
    xp: Any = np

    def to_device(self, a: np.ndarray) -> Any:
        return a

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def repeat(self, counts: Any) -> Any:
        return self.xp.repeat(self.xp.arange(len(counts)), counts)

    def floor_int(self, a: Any) -> Any:
        return self.xp.floor(a).astype(self.xp.int64)

    def bincount(self, idx: Any, size: int, weights: Any = None) -> Any:
        return self.xp.bincount(idx, weights=weights, minlength=size)

    def nonzero(self, mask: Any) -> Any:
        return self.xp.flatnonzero(mask)

    def poisson(self, rng: Any, lam: Any) -> Any:
        return rng.poisson(lam)

    def uniform(self, rng: Any, n: int) -> Any:
        return rng.random(n)

    def exponential(self, rng: Any, n: int) -> Any:
        return rng.standard_exponential(n)

    def normal(self, rng: Any, sigma: float, n: int) -> Any:
        return rng.normal(0.0, sigma, n)

    # --- the algorithm -------------------------------------------------------------------
    def _cell_index(self, g: LayerGeometry, eta: Any, phi: Any) -> Any:
        """Flat cell index; ``n_cells`` (one past the end) for positions outside the layer."""
        xp = self.xp
        ieta = self.floor_int((eta + g.eta_max) / g.deta)
        iphi = self.floor_int((phi % (2.0 * np.pi)) / g.dphi) % g.n_phi
        inside = (ieta >= 0) & (ieta < g.n_eta)
        return xp.where(inside, ieta * g.n_phi + iphi, g.n_cells)

    def layer_cells(
        self,
        rng: Any,
        g: LayerGeometry,
        inp: LayerInput,
        per_gev: float,
        noise_gev: float,
        threshold_gev: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices (int64) and energies (float64, GeV) of the cells kept in one layer.

        Showers: Poisson-distributed quanta per particle, spread laterally with an
        exponential core and tail around the impact point; muons: a point deposit
        in the impact cell; then Gaussian noise in every cell and zero suppression.
        """
        xp = self.xp
        energy, eta, phi, r_imp = (
            self.to_device(a) for a in (inp.energy, inp.eta, inp.phi, inp.r_imp)
        )
        counts = self.poisson(rng, energy * per_gev)
        src = self.repeat(counts)
        n = len(src)
        core = self.uniform(rng, n) < g.core_fraction
        scale = xp.where(core, g.core_mm, g.tail_mm)
        # A lateral distance d at transverse radius r_imp is d / r_imp in both eta and phi.
        spread = scale * self.exponential(rng, n) / r_imp[src]
        angle = self.uniform(rng, n) * (2.0 * np.pi)
        q_eta = eta[src] + spread * xp.cos(angle)
        q_phi = phi[src] + spread * xp.sin(angle)
        quanta = self.bincount(self._cell_index(g, q_eta, q_phi), g.n_cells + 1)[: g.n_cells]
        cells = quanta * (1.0 / per_gev)
        hit = self._cell_index(g, eta, phi)
        cells = (
            cells + self.bincount(hit, g.n_cells + 1, weights=self.to_device(inp.mip))[: g.n_cells]
        )
        cells = cells + self.normal(rng, noise_gev, g.n_cells)
        kept = self.nonzero(cells > threshold_gev)
        return self.to_host(kept).astype(np.int64), self.to_host(cells[kept]).astype(np.float64)


class CupyBackend(CaloBackend):
    """cupy on the worker's GPU: the numpy operations with ``xp = cupy``."""

    name = "cupy-cuda"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def event_rng(self, host_rng: np.random.Generator, seed: int) -> Any:
        return self.xp.random.RandomState(seed % 2**32)

    def to_device(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def repeat(self, counts: Any) -> Any:
        # cupy.repeat wants host repeats; searchsorted on the running sum stays on the GPU.
        xp = self.xp
        ends = xp.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        return xp.searchsorted(ends, xp.arange(total), side="right")

    def uniform(self, rng: Any, n: int) -> Any:
        return rng.random_sample(n)


class TorchBackend(CaloBackend):
    """torch on the CPU or the worker's GPU (``cuda`` is the one CUDA_VISIBLE_DEVICES shows)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = "torch-cuda" if self.device.type == "cuda" else "torch-cpu"

    def event_rng(self, host_rng: np.random.Generator, seed: int) -> Any:
        gen = self.torch.Generator(device=self.device)
        gen.manual_seed(seed % 2**63)
        return gen

    @property
    def xp(self) -> Any:  # type: ignore[override]
        return self.torch

    def to_device(self, a: np.ndarray) -> Any:
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def to_host(self, a: Any) -> np.ndarray:
        return a.cpu().numpy()

    def repeat(self, counts: Any) -> Any:
        t = self.torch
        return t.repeat_interleave(t.arange(len(counts), device=self.device), counts)

    def floor_int(self, a: Any) -> Any:
        return self.torch.floor(a).long()

    def bincount(self, idx: Any, size: int, weights: Any = None) -> Any:
        return self.torch.bincount(idx, weights=weights, minlength=size).double()

    def nonzero(self, mask: Any) -> Any:
        return self.torch.nonzero(mask).squeeze(1)

    def poisson(self, rng: Any, lam: Any) -> Any:
        return self.torch.poisson(lam, generator=rng).long()

    def uniform(self, rng: Any, n: int) -> Any:
        return self.torch.rand(n, generator=rng, device=self.device, dtype=self.torch.float64)

    def exponential(self, rng: Any, n: int) -> Any:
        out = self.torch.empty(n, device=self.device, dtype=self.torch.float64)
        return out.exponential_(generator=rng)

    def normal(self, rng: Any, sigma: float, n: int) -> Any:
        t = self.torch
        return t.randn(n, generator=rng, device=self.device, dtype=t.float64) * sigma


def worker_has_gpu() -> bool:
    """This worker was given a GPU (Parsl sets CUDA_VISIBLE_DEVICES per worker)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return bool(visible) and visible not in ("-1", "NoDevFiles")


def _gpu_backend(library: Library) -> CaloBackend | None:
    """A GPU backend from the first library that sees a device, or None."""
    for lib in ("torch", "cupy") if library == "auto" else (library,):
        try:
            if lib == "torch":
                import torch

                if torch.cuda.is_available():
                    return TorchBackend("cuda")
            elif lib == "cupy":
                import cupy

                if cupy.cuda.runtime.getDeviceCount() > 0:
                    return CupyBackend()
        except Exception:  # not installed, or installed without a working CUDA
            continue
    return None


def select_backend(device: Device, library: Library) -> CaloBackend:
    """The backend for this worker, or a fatal error saying why none fits.

    ``device: auto`` uses a GPU where the worker owns one and a library can drive
    it, numpy otherwise: the setting for sites whose CPU and GPU node types share
    a campaign.
    """
    if library == "numpy":
        if device == "gpu":
            raise FatalPayloadError("array_library numpy cannot run on device gpu")
        return CaloBackend()
    if device == "cpu":
        if library == "cupy":
            raise FatalPayloadError("array_library cupy runs on GPUs only (device: gpu or auto)")
        return TorchBackend("cpu") if library == "torch" else CaloBackend()
    found = _gpu_backend(library) if (device == "gpu" or worker_has_gpu()) else None
    if found is not None:
        return found
    if device == "gpu":
        wanted = "torch or cupy" if library == "auto" else library
        raise FatalPayloadError(
            f"device gpu: no GPU usable through {wanted} on this worker "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )
    return TorchBackend("cpu") if library == "torch" else CaloBackend()
