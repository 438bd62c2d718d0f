"""HepMC3 ASCII files: events written and read with pyhepmc.

Generated events travel between the evgen and simul steps as HepMC3 ASCII, the
format every generator can write. Parsing a HepMC3 event is slow (a ttbar event
is a thousand particle lines), so whatever does not need the particles is done
on the text (``hepmc3_text``: event numbers, offsets, concatenation, re-exported
here), and reading events [skip, skip + n) hands pyhepmc just those events' lines.
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from parsl_es.payloads.base import FatalPayloadError
from parsl_es.payloads.mc.hepmc3_text import (
    FOOTER,
    check_format,
    concatenate,
    event_offsets,
    scan_event_numbers,
)

__all__ = [
    "EventWriter",
    "Particles",
    "concatenate",
    "event_offsets",
    "iter_events",
    "read_events",
    "scan_event_numbers",
]

#: Final-state particles (HepMC3 status 1) and incoming beams (status 4).
FINAL_STATE, BEAM = 1, 4
PROTON_MASS_GEV = 0.938272


@dataclass(frozen=True, slots=True)
class Particles:
    """Particles of one event read from a HepMC3 file (float64 GeV, PDG ids, status)."""

    event_number: int
    pid: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    status: np.ndarray


# -- writing ---------------------------------------------------------------------------------


class EventWriter:
    """Writes events one at a time: beams -> one primary vertex -> final-state particles.

    A single vertex joining the two beams to the final state is the simplest
    structure every HepMC3 reader accepts (status 1 particles must have a
    production vertex, and a vertex needs an incoming particle).
    """

    def __init__(self, path: Path, beam_energy_gev: float, run_number: int | None = None) -> None:
        import pyhepmc

        self._pyhepmc = pyhepmc
        self._beam_energy = float(beam_energy_gev)
        self._run_number = run_number
        self._writer = pyhepmc.io.WriterAscii(str(path))
        if self._writer.failed():
            raise OSError(f"cannot write HepMC3 file {path}")
        self._event = pyhepmc.GenEvent(pyhepmc.Units.GEV, pyhepmc.Units.MM)

    def write(
        self,
        event_number: int,
        pid: np.ndarray,
        px: np.ndarray,
        py: np.ndarray,
        pz: np.ndarray,
        e: np.ndarray,
    ) -> None:
        """One event: final-state particles given in GeV, two proton beams added in front."""
        n = len(pid)
        eb = self._beam_energy
        pb = np.sqrt(max(eb * eb - PROTON_MASS_GEV**2, 0.0))
        f64 = [
            np.concatenate([beam, np.asarray(a, dtype=np.float64)])
            for beam, a in (([0.0, 0.0], px), ([0.0, 0.0], py), ([pb, -pb], pz), ([eb, eb], e))
        ]
        mass = np.sqrt(np.maximum(f64[3] ** 2 - f64[0] ** 2 - f64[1] ** 2 - f64[2] ** 2, 0.0))
        ids = np.concatenate([[2212, 2212], np.asarray(pid)]).astype(np.int32)
        status = np.concatenate([[BEAM, BEAM], np.full(n, FINAL_STATE)]).astype(np.int32)
        # 0-based parent ranges: the beams have none, every final particle both beams.
        parents = np.full((n + 2, 2), -1, dtype=np.int32)
        parents[2:] = (0, 1)
        self._event.from_hepevt(
            int(event_number), *f64, mass, ids, status, parents=parents, fortran=False
        )
        self._event.set_units(self._pyhepmc.Units.GEV, self._pyhepmc.Units.MM)
        if self._run_number is not None:  # an ``A 0 run_number <n>`` line of the event
            self._event.attributes["run_number"] = int(self._run_number)
        self._writer.write(self._event)
        if self._writer.failed():
            raise OSError(f"writing HepMC3 event {event_number} failed")

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading ---------------------------------------------------------------------------------


def read_events(path: Path, skip: int = 0, n: int | None = None) -> list[Particles]:
    """Events [skip, skip + n) of a HepMC3 file (all after ``skip`` if ``n`` is None)."""
    return list(iter_events(path, skip, n))


def iter_events(path: Path, skip: int = 0, n: int | None = None) -> Iterator[Particles]:
    """Events [skip, skip + n) of a HepMC3 file, one at a time, momenta in GeV.

    pyhepmc's ReaderAscii has no skip (2.16), and reading past events means
    parsing them: instead only the wanted events' text is handed to the reader,
    with the file's header in front so that run information (weight names,
    attributes) is known to it. A whole file (no skip, no count) is streamed
    from disk, so a merged file of 10^5 events never sits in memory. A file
    with fewer events is a FatalPayloadError: the input will not grow on retry.
    """
    import pyhepmc

    if skip == 0 and n is None:
        with open(path, "rb") as f:
            check_format(f, path)
            found = yield from _parse(pyhepmc, f, path, None, 0)
        if found != (expected := len(scan_event_numbers(path))):
            raise FatalPayloadError(f"{path}: {found} of its {expected} events could be parsed")
        return
    numbers, offsets, end = event_offsets(path)
    stop = len(numbers) if n is None else skip + n
    if skip < 0 or stop > len(numbers):
        raise FatalPayloadError(
            f"{path} holds {len(numbers)} events; events [{skip}, {stop}) were asked for"
        )
    if stop == skip:
        return
    bounds = [*offsets.tolist(), end]
    with open(path, "rb") as f:
        header = f.read(int(offsets[0]))
        f.seek(bounds[skip])
        body = f.read(bounds[stop] - bounds[skip])
    yield from _parse(pyhepmc, io.BytesIO(header + body + FOOTER + b"\n"), path, stop - skip, skip)


def _parse(
    pyhepmc: Any, stream: BinaryIO, path: Path, count: int | None, first: int
) -> Generator[Particles, None, int]:
    """Parse ``count`` events (None: until the stream ends); returns how many were read."""
    reader = pyhepmc.io.ReaderAscii(pyhepmc.io.pyiostream(stream))
    read = 0
    try:
        while count is None or read < count:
            evt = pyhepmc.GenEvent()
            if not reader.read_event(evt) or reader.failed():
                if count is None:
                    break
                raise FatalPayloadError(f"{path}: event {first + read} cannot be parsed")
            evt.set_units(pyhepmc.Units.GEV, pyhepmc.Units.MM)
            p = evt.numpy.particles
            yield Particles(
                event_number=int(evt.event_number),
                pid=np.asarray(p.pid, dtype=np.int32),
                px=np.asarray(p.px, dtype=np.float64),
                py=np.asarray(p.py, dtype=np.float64),
                pz=np.asarray(p.pz, dtype=np.float64),
                e=np.asarray(p.e, dtype=np.float64),
                status=np.asarray(p.status, dtype=np.int32),
            )
            read += 1
    finally:
        reader.close()
    return read
