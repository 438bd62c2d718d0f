"""A fast numpy detector: a barrel silicon tracker and a sampling calorimeter.

Not a precision simulation, but honest per-event work with the right scaling:
helices in a solenoid field, hit inefficiency and smearing, and showers made of
Poisson-distributed energy quanta, so that the calorimeter's stochastic term
emerges (sigma/E ~ sqrt(quantum/E)) and its cost scales as 1/quantum. All
randomness comes from the ``numpy.random.Generator`` the caller passes, seeded
per event, so detector output is as reproducible as the generator's.

Units: GeV, mm, radians; the field in tesla.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsl_es.payloads.physics.calo_backends import CaloBackend, LayerGeometry, LayerInput
from parsl_es.payloads.physics.generator import GenParticles

TWO_PI = 2.0 * np.pi
#: Helix radius in mm per GeV of pT per tesla: R = pT / (0.3 B) m.
MM_PER_GEV_TESLA = 1000.0 / 0.3

EM, HAD = 0, 1
REFERENCE_BACKEND = CaloBackend()
PHOTON_OR_ELECTRON = (11, 22)
MUON = 13
NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True, slots=True)
class CaloLayer:
    """One calorimeter layer: its segmentation, where showers start and how they spread."""

    eta_max: float
    n_eta: int
    n_phi: int
    radius_mm: float  # barrel front face
    z_mm: float  # endcap front face
    #: Quanta per GeV per unit of ``calo_quantum_gev``: finer sampling, better resolution.
    sampling: float
    core_fraction: float  # share of quanta in the narrow shower core
    core_mm: float  # exponential lateral scales of core and tail
    tail_mm: float

    @property
    def n_cells(self) -> int:
        return self.n_eta * self.n_phi

    @property
    def deta(self) -> float:
        return 2.0 * self.eta_max / self.n_eta

    @property
    def dphi(self) -> float:
        return TWO_PI / self.n_phi

    @property
    def geometry(self) -> LayerGeometry:
        return LayerGeometry(
            n_eta=self.n_eta,
            n_phi=self.n_phi,
            eta_max=self.eta_max,
            deta=self.deta,
            dphi=self.dphi,
            core_fraction=self.core_fraction,
            core_mm=self.core_mm,
            tail_mm=self.tail_mm,
        )


#: EM: 0.025 x 2pi/256 cells, Moliere radius ~35 mm; resolution ~11%/sqrt(E) at 0.05 GeV.
EM_LAYER = CaloLayer(3.2, 256, 256, 1500.0, 3700.0, 4.0, 0.85, 18.0, 60.0)
#: HAD: 0.1 x 2pi/64 cells, wide showers; resolution ~45%/sqrt(E) at 0.05 GeV.
HAD_LAYER = CaloLayer(4.9, 98, 64, 2300.0, 4300.0, 0.25, 0.7, 60.0, 200.0)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Geometry and response; ``calo_quantum_gev`` and ``noise_gev`` come from the params."""

    calo_quantum_gev: float = 0.05
    noise_gev: float = 0.03
    b_field_t: float = 2.0
    layer_radii_mm: tuple[float, ...] = (33.0, 50.0, 88.0, 122.0, 299.0, 371.0, 443.0, 514.0)
    track_pt_min: float = 0.5
    track_eta_max: float = 2.5
    hit_efficiency: float = 0.98
    sigma_rphi_mm: float = 0.015
    sigma_z_mm: float = 0.050
    zero_suppression_sigma: float = 3.0
    muon_mip_gev: float = 2.4  # mean muon deposit, split EM/HAD below
    muon_em_share: float = 0.15
    layers: tuple[CaloLayer, CaloLayer] = (EM_LAYER, HAD_LAYER)


@dataclass(frozen=True, slots=True)
class Hits:
    """Tracker hits of one event."""

    x: np.ndarray  # float32, mm
    y: np.ndarray
    z: np.ndarray
    layer: np.ndarray  # int8
    particle: np.ndarray  # int32 index into the event's GenParticles


@dataclass(frozen=True, slots=True)
class Cells:
    """Calorimeter cells above the zero-suppression threshold."""

    eta: np.ndarray  # float32, cell centre
    phi: np.ndarray
    e: np.ndarray  # float32, GeV
    layer: np.ndarray  # int8: 0 = EM, 1 = HAD


@dataclass(frozen=True, slots=True)
class Kinematics:
    """Derived quantities of the final-state particles, in float64."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    e: np.ndarray
    charge: np.ndarray
    abs_pid: np.ndarray

    @classmethod
    def of(cls, p: GenParticles) -> Kinematics:
        px, py, pz = (a.astype(np.float64) for a in (p.px, p.py, p.pz))
        pt = np.hypot(px, py)
        return cls(
            pt=pt,
            eta=np.arcsinh(pz / np.maximum(pt, 1e-9)),
            phi=np.arctan2(py, px),
            e=p.e.astype(np.float64),
            charge=p.charge.astype(np.float64),
            abs_pid=np.abs(p.pid),
        )


class Detector:
    """Simulates tracker hits and calorimeter cells for one event at a time."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    def simulate(
        self,
        particles: GenParticles,
        rng: np.random.Generator,
        backend: CaloBackend | None = None,
        shower_seed: int = 0,
    ) -> tuple[Hits, Cells]:
        kin = Kinematics.of(particles)
        return self.tracker(kin, rng), self.calorimeter(kin, rng, backend, shower_seed)

    # -- tracker ---------------------------------------------------------------------------

    def _helix_radius(self, pt: np.ndarray) -> np.ndarray:
        return pt * MM_PER_GEV_TESLA / self.config.b_field_t

    def tracker(self, kin: Kinematics, rng: np.random.Generator) -> Hits:
        """Intersect charged helices with the barrel layers, drop and smear hits."""
        cfg = self.config
        sel = np.flatnonzero(
            (kin.charge != 0) & (kin.pt > cfg.track_pt_min) & (np.abs(kin.eta) < cfg.track_eta_max)
        )
        radii = np.asarray(cfg.layer_radii_mm)
        helix = self._helix_radius(kin.pt[sel])[:, None]
        ratio = radii[None, :] / (2.0 * helix)  # particles with r > 2R never reach the layer
        reached = (ratio < 1.0) & (rng.random(ratio.shape) < cfg.hit_efficiency)
        part, layer = np.nonzero(reached)
        turn = np.arcsin(ratio[part, layer])
        r = radii[layer]
        phi = kin.phi[sel][part] - kin.charge[sel][part] * turn
        phi += rng.normal(0.0, cfg.sigma_rphi_mm, len(r)) / r
        # Straight line in s-z, with s the transverse arc length 2R*asin(r/2R).
        z = 2.0 * helix[part, 0] * turn * np.sinh(kin.eta[sel][part])
        z += rng.normal(0.0, cfg.sigma_z_mm, len(r))
        return Hits(
            x=(r * np.cos(phi)).astype(np.float32),
            y=(r * np.sin(phi)).astype(np.float32),
            z=z.astype(np.float32),
            layer=layer.astype(np.int8),
            particle=sel[part].astype(np.int32),
        )

    # -- calorimeter -----------------------------------------------------------------------

    def _impact(self, kin: Kinematics, idx: np.ndarray, layer: CaloLayer) -> tuple[np.ndarray, ...]:
        """Transverse radius and azimuth where particles ``idx`` reach ``layer``, and a mask
        of those that reach it at all (low-pT charged particles loop inside the field)."""
        eta = kin.eta[idx]
        r_imp = np.minimum(layer.radius_mm, layer.z_mm / np.maximum(np.abs(np.sinh(eta)), 1e-9))
        ratio = r_imp / (2.0 * self._helix_radius(kin.pt[idx]))
        charge = kin.charge[idx]
        reaches = (charge == 0) | (ratio < 1.0)
        phi = kin.phi[idx] - charge * np.arcsin(np.minimum(ratio, 1.0))
        return r_imp, phi, reaches

    def _deposits(
        self, kin: Kinematics, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Visible energy of each particle in the EM and HAD layers, plus muon MIP deposits.

        Photons and electrons shower in EM (in HAD beyond the EM acceptance); hadrons
        leave a random share in EM and the rest in HAD; neutrinos nothing.
        """
        cfg = self.config
        n = len(kin.e)
        is_em = np.isin(kin.abs_pid, PHOTON_OR_ELECTRON)
        is_mu = kin.abs_pid == MUON
        is_had = ~(is_em | is_mu | np.isin(kin.abs_pid, NEUTRINOS))
        em_share = np.where(is_em, 1.0, np.where(is_had, rng.beta(2.0, 5.0, n), 0.0))
        forward = np.abs(kin.eta) >= cfg.layers[EM].eta_max
        em_share = np.where(forward, 0.0, em_share)
        visible = np.where(is_em | is_had, kin.e, 0.0)
        mip = np.where(is_mu, np.minimum(rng.gamma(6.0, cfg.muon_mip_gev / 6.0, n), kin.e), 0.0)
        em_mip = mip * cfg.muon_em_share
        energies = [visible * em_share, visible * (1.0 - em_share)]
        return energies, em_mip, mip - em_mip

    def calorimeter(
        self,
        kin: Kinematics,
        rng: np.random.Generator,
        backend: CaloBackend | None = None,
        shower_seed: int = 0,
    ) -> Cells:
        """Shower every visible particle, add noise, keep cells above threshold.

        Per-particle deposits are drawn on the CPU from ``rng``; the showers and the
        noise are sampled by ``backend`` (numpy continues ``rng``; a GPU backend uses
        its own generator seeded with ``shower_seed``).
        """
        cfg = self.config
        backend = backend or REFERENCE_BACKEND
        showers, *mips = self._deposits(kin, rng)
        shower_rng = backend.event_rng(rng, shower_seed)
        out = []
        for code, layer in enumerate(cfg.layers):
            inp = self._layer_input(kin, layer, showers[code], mips[code])
            kept, energy = backend.layer_cells(
                shower_rng,
                layer.geometry,
                inp,
                per_gev=layer.sampling / cfg.calo_quantum_gev,
                noise_gev=cfg.noise_gev,
                threshold_gev=cfg.zero_suppression_sigma * cfg.noise_gev,
            )
            out.append(_cells(layer, code, kept, energy))
        return Cells(*(np.concatenate(parts) for parts in zip(*out, strict=True)))

    def _layer_input(
        self, kin: Kinematics, layer: CaloLayer, shower: np.ndarray, mip: np.ndarray
    ) -> LayerInput:
        """The particles that deposit energy in ``layer``, with their impact points."""
        idx = np.flatnonzero(((shower > 0) | (mip > 0)) & (np.abs(kin.eta) < layer.eta_max))
        r_imp, phi, reaches = self._impact(kin, idx, layer)
        idx, r_imp, phi = idx[reaches], r_imp[reaches], phi[reaches]
        return LayerInput(energy=shower[idx], eta=kin.eta[idx], phi=phi, r_imp=r_imp, mip=mip[idx])


def _cells(
    layer: CaloLayer, code: int, kept: np.ndarray, energy: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Cell centres, energies and layer codes of the kept cells of one layer."""
    ieta, iphi = np.divmod(kept, layer.n_phi)
    phi = (iphi + 0.5) * layer.dphi
    phi = np.where(phi > np.pi, phi - TWO_PI, phi)  # same convention as atan2
    return (
        (-layer.eta_max + (ieta + 0.5) * layer.deta).astype(np.float32),
        phi.astype(np.float32),
        energy.astype(np.float32),
        np.full(len(kept), code, dtype=np.int8),
    )
