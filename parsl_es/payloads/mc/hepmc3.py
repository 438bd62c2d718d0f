"""HepMC3 ASCII files: written and read with pyhepmc, scanned and joined as text.

Generated events travel between the evgen and simul steps as HepMC3 ASCII, the
format every generator can write. Parsing a HepMC3 event is slow (a ttbar event
is a thousand particle lines), so whatever does not need the particles is done
on the text: counting and numbering events reads only the ``E <number> ...``
lines, reading events [skip, skip + n) hands pyhepmc just those events' lines,
and concatenating files copies their event blocks byte for byte.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from parsl_es.payloads.base import FatalPayloadError

FORMAT_MARK = b"HepMC::Asciiv3"
FOOTER = b"HepMC::Asciiv3-END_EVENT_LISTING"
#: Final-state particles (HepMC3 status 1) and incoming beams (status 4).
FINAL_STATE, BEAM = 1, 4
PROTON_MASS_GEV = 0.938272
#: Text is scanned in blocks of this many bytes (cut at line ends).
CHUNK = 1 << 22


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


# -- scanning --------------------------------------------------------------------------------


def _check_format(f: BinaryIO, path: Path) -> None:
    head = f.read(256)
    f.seek(0)
    if FORMAT_MARK not in head:
        raise FatalPayloadError(f"{path} is not a HepMC3 ASCII file (no {FORMAT_MARK.decode()})")


def _line_chunks(f: BinaryIO, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, block) pairs from ``start`` on, every block ending at a line end.

    The partial line at a block's end is read again with the next block (a seek,
    not a copy of the block).
    """
    offset = start
    while True:
        f.seek(offset)
        block = f.read(CHUNK)
        if not block:
            return
        cut = block.rfind(b"\n") + 1 if len(block) == CHUNK else len(block)
        if cut == 0:  # a line longer than a block: take it whole
            line = block + f.readline()
            yield offset, line
            offset += len(line)
            continue
        yield offset, block[:cut] if cut < len(block) else block
        offset += cut


def event_offsets(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Event numbers, the byte offset of each event's ``E`` line, and where events end.

    The end is the footer's offset (the file's size if it has none: a file cut
    short still shows the events it holds). Remembered per file version: a worker
    serving many ranges of one merged input (10^5 events, 7 GB: ~15 s to scan)
    scans it once.
    """
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _SCANS:
        if len(_SCANS) >= _SCANS_KEPT:
            _SCANS.pop(next(iter(_SCANS)))
        _SCANS[key] = _scan(path)
    return _SCANS[key]


#: Scans of the files read last (oldest first); a few MB for files of 10^5 events.
_SCANS: dict[tuple[str, int, int, int], tuple[np.ndarray, np.ndarray, int]] = {}
_SCANS_KEPT = 4


def _scan(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    # 8 bytes an entry while scanning (a list of ints would take ~36): a dataset of
    # millions of events is counted at submit in bounded memory.
    numbers = array("q")
    offsets = array("q")
    end = None
    with open(path, "rb") as f:
        _check_format(f, path)
        for offset, block in _line_chunks(f):
            at = _footer_at(block)
            for start, number in _event_lines(block, at if at >= 0 else len(block)):
                numbers.append(number)
                offsets.append(offset + start)
            if at >= 0:
                end = offset + at
                break
        if end is None:
            end = f.seek(0, io.SEEK_END)
    found = (
        np.frombuffer(numbers, dtype=np.int64) if numbers else np.zeros(0, dtype=np.int64),
        np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, dtype=np.int64),
    )
    for column in found:
        column.flags.writeable = False  # shared by every caller through the cache
    return *found, end


def _event_lines(block: bytes, stop: int) -> Iterator[tuple[int, int]]:
    """(offset, event number) of the ``E`` lines starting before ``stop`` in whole lines.

    ``bytes.find`` jumps from one event line to the next at memory speed (about
    1 GB/s); a regular expression tries every byte and is ten times slower.
    """
    if block.startswith(b"E "):
        at = 0
    elif (at := block.find(b"\nE ") + 1) == 0:
        return
    while at < stop:
        line_end = block.find(b"\n", at)
        line = block[at : line_end if line_end >= 0 else len(block)]
        try:
            number = int(line.split()[1])
        except (IndexError, ValueError):
            raise FatalPayloadError(f"not a HepMC3 event line: {line[:80]!r}") from None
        yield at, number
        if (at := block.find(b"\nE ", at + 2) + 1) == 0:
            return


def _footer_at(block: bytes) -> int:
    """Where the footer line starts in a block of whole lines (-1: not there)."""
    if block.startswith(FOOTER):
        return 0
    at = block.find(b"\n" + FOOTER)
    return at + 1 if at >= 0 else -1


def scan_event_numbers(path: Path) -> np.ndarray:
    """The event numbers of a HepMC3 file, in file order, from its ``E`` lines alone.

    Also the reader that counts an input dataset at submit (``parsl_es.datasets``):
    it raises FatalPayloadError on a file that is not HepMC3 ASCII.
    """
    return event_offsets(path)[0]


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
            _check_format(f, path)
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


# -- joining ---------------------------------------------------------------------------------


def concatenate(inputs: Sequence[Path], output: Path) -> int:
    """One HepMC3 file of all events of ``inputs`` in order; returns the event count.

    The first input's header is kept (its run information describes all of them:
    they come from one step), every file's event blocks are copied as text and a
    single footer closes the listing.
    """
    if not inputs:
        raise ValueError("nothing to concatenate")
    count = 0
    with open(output, "wb") as out:
        for i, path in enumerate(inputs):
            numbers, offsets, end = event_offsets(path)
            with open(path, "rb") as f:
                start = int(offsets[0]) if len(offsets) else end
                if i == 0:
                    out.write(f.read(start))
                f.seek(start)
                remaining = end - start
                while remaining > 0 and (block := f.read(min(CHUNK, remaining))):
                    out.write(block)
                    remaining -= len(block)
            count += len(numbers)
        out.write(FOOTER + b"\n")
    return count
