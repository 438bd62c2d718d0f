"""Topological clustering of calorimeter cells, layer by layer.

The reconstruction does not see particles, only cells with energy and noise.
Clusters are grown the way topo-clusters are: cells far above the noise seed
them, cells moderately above the noise extend them through their eta-phi
neighbours (so a shower is one cluster however many cells it covers, and two
showers that touch merge), and a last ring of perimeter cells is added to keep
a shower's tails. A cluster is then the sum of its cells' massless momenta,
the input of jet finding and missing transverse energy.

The work is on the event's kept cells only (hundreds to a few thousand, not the
70,000 of the calorimeter): each cell's eight neighbours are found by sorted
search, and every connected group of growing cells is found by hooking and
pointer jumping (a few passes whatever the group's shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsl_es.payloads.physics.detector import CaloLayer, DetectorConfig

#: The eight eta-phi neighbours of a cell.
_OFFSETS = [(de, dp) for de in (-1, 0, 1) for dp in (-1, 0, 1) if (de, dp) != (0, 0)]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Cell significances |E| / noise that seed, grow and bound a cluster."""

    noise_gev: float = 0.03
    seed: float = 4.0
    grow: float = 2.0
    perimeter: float = 0.0


@dataclass(frozen=True, slots=True)
class Clusters:
    """Clusters of one event: energy, momentum, cell count and layer.

    ``e`` is the cells' summed energy (what the calorimeter measured); the
    momentum is the sum of the cells' massless momenta, not the energy put at
    the barycentre: a cluster spread over a wide region (a forward ring of beam
    remnants, lit all around in phi) keeps the small transverse momentum its
    cells add up to, instead of carrying all its energy's pT in one direction.
    """

    e: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    n_cells: np.ndarray
    layer: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-12))

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)

    def momenta(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Massless (px, py, pz, E = |p|) of each cluster: the jets' inputs."""
        return self.px, self.py, self.pz, np.sqrt(self.px**2 + self.py**2 + self.pz**2)


def cluster_event(
    eta: np.ndarray,
    phi: np.ndarray,
    e: np.ndarray,
    layer: np.ndarray,
    thresholds: Thresholds,
    layers: tuple[CaloLayer, ...] = DetectorConfig().layers,
) -> Clusters:
    """Cluster the cells of one event, each calorimeter layer on its own grid."""
    parts = []
    for code, geometry in enumerate(layers):
        sel = layer == code
        parts.append(_cluster_layer(eta[sel], phi[sel], e[sel], geometry, code, thresholds))
    return Clusters(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def _grid_index(eta: np.ndarray, phi: np.ndarray, geo: CaloLayer) -> tuple[np.ndarray, ...]:
    """The (eta, phi) cell indices of cell centres (phi in (-pi, pi], as the detector stores)."""
    ieta = np.floor((eta.astype(np.float64) + geo.eta_max) / geo.deta).astype(np.int64)
    iphi = np.floor(np.mod(phi.astype(np.float64), 2 * np.pi) / geo.dphi).astype(np.int64)
    return np.clip(ieta, 0, geo.n_eta - 1), np.mod(iphi, geo.n_phi)


def _neighbours(ieta: np.ndarray, iphi: np.ndarray, geo: CaloLayer) -> np.ndarray:
    """For each cell, the positions of its kept neighbours among the cells (-1: none).

    Phi wraps around; eta does not.
    """
    keys = ieta * geo.n_phi + iphi
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    out = np.full((len(keys), len(_OFFSETS)), -1, dtype=np.int64)
    for j, (de, dp) in enumerate(_OFFSETS):
        ne = ieta + de
        nkey = ne * geo.n_phi + np.mod(iphi + dp, geo.n_phi)
        pos = np.minimum(np.searchsorted(sorted_keys, nkey), max(len(keys) - 1, 0))
        found = (ne >= 0) & (ne < geo.n_eta) & (len(keys) > 0)
        if len(keys):
            found &= sorted_keys[pos] == nkey
        out[found, j] = order[pos[found]]
    return out


def _cluster_layer(
    eta: np.ndarray, phi: np.ndarray, e: np.ndarray, geo: CaloLayer, code: int, t: Thresholds
) -> tuple[np.ndarray, ...]:
    e64 = e.astype(np.float64)
    significance = np.abs(e64) / t.noise_gev
    seeds = np.flatnonzero(significance > t.seed)
    if len(seeds) == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int8)
    ieta, iphi = _grid_index(eta, phi, geo)
    nbr = _neighbours(ieta, iphi, geo)
    grows = significance > t.grow
    label = np.where(grows, _components(nbr, grows) + 1, 0)
    # Only components holding a seed are clusters.
    seeded = np.zeros(len(e64) + 1, dtype=bool)
    seeded[label[seeds]] = True
    seeded[0] = False
    label = np.where(seeded[label], label, 0)
    # Perimeter: unlabelled cells above the perimeter threshold next to a cluster.
    has = nbr >= 0
    around = np.where(has, label[np.maximum(nbr, 0)], 0).max(axis=1)
    rim = (label == 0) & (significance > t.perimeter) & (around > 0)
    label = np.where(rim, around, label)
    return _sums(label, e64, eta, phi, code)


def _components(nbr: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Connected components of the ``member`` cells: each one's root is its lowest index.

    Hooking and pointer jumping (Shiloach-Vishkin): every pass joins each tree to
    the lowest neighbouring tree, then flattens the trees, so a component of any
    shape settles in a few passes instead of one pass per cell of its diameter.
    Cells outside ``member`` are their own roots.
    """
    n = len(member)
    root = np.arange(n)
    links = (nbr >= 0) & member[:, None] & member[np.maximum(nbr, 0)]
    safe = np.where(links, nbr, np.arange(n)[:, None])
    while True:
        lowest = np.minimum(root, root[safe].min(axis=1))
        before = root.copy()
        np.minimum.at(root, root, lowest)  # hook each tree under its lowest neighbour
        while not np.array_equal(jumped := root[root], root):
            root = jumped
        if np.array_equal(root, before):
            return root


def _sums(
    label: np.ndarray, e: np.ndarray, eta: np.ndarray, phi: np.ndarray, code: int
) -> tuple[np.ndarray, ...]:
    """Summed energy, summed massless cell momentum and cell count per label."""
    inside = label > 0
    ids, index, n_cells = np.unique(label[inside], return_inverse=True, return_counts=True)
    n = len(ids)
    w = e[inside]
    cell_eta = eta[inside].astype(np.float64)
    cell_phi = phi[inside].astype(np.float64)
    cell_pt = w / np.cosh(cell_eta)
    energy = np.bincount(index, w, n)
    px = np.bincount(index, cell_pt * np.cos(cell_phi), n)
    py = np.bincount(index, cell_pt * np.sin(cell_phi), n)
    pz = np.bincount(index, cell_pt * np.sinh(cell_eta), n)
    keep = energy > 0
    return (
        energy[keep],
        px[keep],
        py[keep],
        pz[keep],
        n_cells[keep].astype(np.int32),
        np.full(int(keep.sum()), code, dtype=np.int8),
    )
