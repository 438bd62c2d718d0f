"""An input dataset at submit and on resume (parsl_es.datasets, parsl_es.unique_numbers)."""

from __future__ import annotations

import os
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pyhepmc
import pytest

from parsl_es import datasets, unique_numbers
from parsl_es.dataset_plan import InputFile
from parsl_es.datasets import READERS, check_unchanged, count, reader_for, resolve
from parsl_es.errors import UserError
from parsl_es.fileio import adler32
from parsl_es.unique_numbers import UniqueNumbers

SOURCE = "campaign.yaml"
FIELD = "chain.simul.input.files"
LINE = 12
WHERE = f"{SOURCE}:{LINE}: {FIELD}: "


def write_hepmc3(path: Path, numbers: list[int]) -> Path:
    """A real HepMC3 file: one event per number, a beam particle into one vertex."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pyhepmc.open(path, "w") as f:
        for n in numbers:
            event = pyhepmc.GenEvent()
            event.event_number = n
            vertex = pyhepmc.GenVertex()
            vertex.add_particle_in(pyhepmc.GenParticle((0, 0, 1, 1), 2212, 4))
            vertex.add_particle_out(pyhepmc.GenParticle((0, 0, 1, 1), 11, 1))
            event.add_vertex(vertex)
            f.write(event)
    return path


def read_hepmc3(path: Path) -> np.ndarray:
    """The tests' HepMC3 reader (the shipped one is parsl_es.payloads.mc.hepmc3's)."""
    with open(path, "rb") as f:
        if not f.readline().startswith(b"HepMC::Version"):
            raise ValueError("no HepMC::Version header")
    with pyhepmc.open(path) as f:
        return np.array([event.event_number for event in f], dtype=np.int64)


def counted(paths: list[Path], reader=read_hepmc3) -> tuple[InputFile, ...]:
    return count(paths, reader, fmt="hepmc3", source=SOURCE, field=FIELD, line=LINE)


def refused(call, *args, **kw) -> str:
    """The one-line message of the UserError ``call`` raises, naming file, line and field."""
    with pytest.raises(UserError) as info:
        call(*args, **kw)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(WHERE), text
    assert info.value.exit_code == 2
    return text


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def resolved(patterns: list[str], base: Path) -> list[Path]:
    return resolve(patterns, base, SOURCE, FIELD, LINE)


# -- resolve --


def test_paths_and_globs_relative_to_the_campaign_directory_sorted_within_a_glob(tmp_path):
    tmp_path = tmp_path / "campaigns [v2]"  # glob characters in the campaign's directory
    for name in ("b.hepmc", "a.hepmc", "c.hepmc", "skip.txt"):
        touch(tmp_path / "data" / name)
    touch(tmp_path / "data" / "deep" / "d.hepmc")
    absolute = touch(tmp_path / "elsewhere" / "z.hepmc")
    got = resolved(["data/c.hepmc", "data/[ab].hepmc", "data/**/d.hepmc", str(absolute)], tmp_path)
    assert got == [
        tmp_path / "data" / "c.hepmc",
        tmp_path / "data" / "a.hepmc",
        tmp_path / "data" / "b.hepmc",
        tmp_path / "data" / "deep" / "d.hepmc",
        absolute,
    ]
    assert all(p.is_absolute() for p in got)


@pytest.mark.parametrize(
    ("patterns", "says"),
    [
        ([], "no input files"),
        (["data/*.root"], "matches no file"),
        (["data/missing.hepmc"], "no such file"),
        (["data"], "is a directory"),
        (["data/*"], "is a directory"),
        (["data/a.hepmc", "data/a.hepmc"], "listed twice"),
        (["data/a.hepmc", "data/*.hepmc"], "listed twice"),
        (["data/a.hepmc", "data/../data/a.hepmc"], "listed twice"),
        (["data/a.hepmc", "link.hepmc"], "the same file as"),
        (["fifo"], "not a regular file"),
        ([""], "a path or a glob"),
        (["a\0b"], "NUL"),
    ],
)
def test_bad_entries_are_one_line_errors_naming_file_field_and_line(tmp_path, patterns, says):
    touch(tmp_path / "data" / "a.hepmc")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "link.hepmc").symlink_to(tmp_path / "data" / "a.hepmc")
    os.mkfifo(tmp_path / "fifo")
    assert says in refused(resolve, patterns, tmp_path, SOURCE, FIELD, LINE)


def test_an_unreadable_file_is_refused(tmp_path, monkeypatch):
    secret = touch(tmp_path / "secret.hepmc")
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads anything: have the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: p != secret and real(p, mode))
    assert "not readable" in refused(resolve, ["secret.hepmc"], tmp_path, SOURCE, FIELD, LINE)


# -- count --


def test_counting_real_hepmc3_files(tmp_path):
    a = write_hepmc3(tmp_path / "a.hepmc", [7, 3, 100, 4])
    b = write_hepmc3(tmp_path / "b.hepmc", [5, 2**31 - 1])  # HepMC3 numbers are 32-bit
    files = counted([a, b])
    assert files == (
        InputFile(str(a), a.stat().st_size, adler32(a), 4),
        InputFile(str(b), b.stat().st_size, adler32(b), 2),
    )


def test_a_number_in_two_hepmc3_files_is_named_with_both_files(tmp_path):
    a = write_hepmc3(tmp_path / "a.hepmc", [1, 2, 3])
    b = write_hepmc3(tmp_path / "b.hepmc", [10, 11])
    c = write_hepmc3(tmp_path / "c.hepmc", [4, 11, 12])
    text = refused(counted, [a, b, c])
    assert "event number 11 appears in both" in text
    assert str(b) in text and str(c) in text and str(a) not in text


def test_a_number_twice_in_one_file_is_named(tmp_path):
    a = write_hepmc3(tmp_path / "a.hepmc", [1, 2, 3])
    b = write_hepmc3(tmp_path / "b.hepmc", [9, 8, 9])
    text = refused(counted, [a, b])
    assert f"event number 9 appears twice in '{b}'" in text


def test_an_empty_file_is_refused(tmp_path):
    empty = touch(tmp_path / "empty.hepmc", "")
    assert "is empty" in refused(counted, [empty])


def test_a_file_the_reader_cannot_parse_is_not_a_hepmc3_file(tmp_path):
    good = write_hepmc3(tmp_path / "a.hepmc", [1])
    bad = touch(tmp_path / "notes.hepmc", "these are my notes\n")
    text = refused(counted, [good, bad])
    assert f"'{bad}': not a HepMC3 file (no HepMC::Version header)" in text


def test_a_file_without_events_is_refused(tmp_path):
    none = touch(
        tmp_path / "none.hepmc",
        "HepMC::Version 3.02.05\nHepMC::Asciiv3-START_EVENT_LISTING\n"
        "HepMC::Asciiv3-END_EVENT_LISTING\n",
    )
    assert "no events" in refused(counted, [none])


def test_a_file_gone_before_counting_is_refused(tmp_path):
    gone = tmp_path / "gone.hepmc"
    assert "No such file" in refused(counted, [gone])


# -- the duplicate check, against a set on random datasets --


def brute_force(files: list[list[int]]) -> tuple[set[int], set[int]]:
    """Numbers twice within one file; numbers in two files."""
    within = {n for f in files for n in f if f.count(n) > 1}
    across = {n for i, f in enumerate(files) for g in files[i + 1 :] for n in set(f) & set(g)}
    return within, across


def test_unique_numbers_agrees_with_a_set_on_random_datasets(monkeypatch):
    # tiny windows, so that every group is cut into many
    monkeypatch.setattr(unique_numbers, "SAMPLES", 16)
    monkeypatch.setattr(unique_numbers, "WINDOW", 32)
    rng = random.Random(3)
    for _ in range(120):
        span = rng.choice([50, 1000, 10**12])
        files = [
            [rng.randrange(-span, span) for _ in range(rng.randint(1, 40))]
            for _ in range(rng.randint(1, 8))
        ]
        within, across = brute_force(files)
        with UniqueNumbers() as seen:
            twice = None
            for f in files:
                twice = seen.add(np.array(f))
                if twice is not None:
                    break
            if twice is not None:
                assert twice in within
                continue
            assert not within
            clash = seen.clash()
        if not across:
            assert clash is None
            continue
        number, first, second = clash
        assert number in across and first < second
        assert number in files[first] and number in files[second]


# -- resume --


def test_an_unchanged_dataset_passes_and_a_changed_file_is_named(tmp_path):
    a = write_hepmc3(tmp_path / "a.hepmc", [1, 2])
    b = write_hepmc3(tmp_path / "b.hepmc", [3])
    files = counted([a, b])
    check_unchanged(files)

    text = b.read_text()
    b.write_text(text.replace("E 3 ", "E 4 "))  # same size, other content
    with pytest.raises(UserError, match="adler32") as info:
        check_unchanged(files)
    assert str(info.value).startswith(f"{b}: input file changed")

    b.write_text(text + "\n")
    with pytest.raises(UserError, match="size") as info:
        check_unchanged(files)
    assert str(info.value).startswith(f"{b}: ")

    a.unlink()
    with pytest.raises(UserError, match="gone") as info:
        check_unchanged(files)
    assert str(info.value).startswith(f"{a}: ")


# -- readers --


def test_the_hepmc3_reader_is_registered_and_imported_only_when_asked_for(monkeypatch):
    assert READERS["hepmc3"] == "parsl_es.payloads.mc.hepmc3:scan_event_numbers"
    monkeypatch.setitem(READERS, "test-hepmc3", "tests.test_datasets:read_hepmc3")
    assert reader_for("test-hepmc3", source=SOURCE, field=FIELD, line=LINE) is read_hepmc3
    text = refused(reader_for, "hepmc", source=SOURCE, field=FIELD, line=LINE)
    assert "unknown input format 'hepmc'" in text and "did you mean 'hepmc3'" in text


# -- memory --


def test_memory_stays_bounded_for_two_million_numbers_in_twenty_files(tmp_path):
    """A Python set of 2,000,000 numbers takes ~140 MB, one int64 array of them 16 MB.

    Two datasets: files numbered in blocks (no file overlaps another), and files
    numbered in turn (every file overlaps every other: the windowed check).
    """
    n_files, per_file = 20, 100_000
    paths = [touch(tmp_path / f"f{k:02d}.hepmc", "HepMC::Version 3\n") for k in range(n_files)]

    def blocks(path: Path) -> np.ndarray:
        k = int(path.stem[1:])
        return np.arange((k + 1) * per_file - 1, k * per_file - 1, -1, dtype=np.int64)

    def in_turn(path: Path) -> np.ndarray:
        k = int(path.stem[1:])
        return np.arange(k, n_files * per_file, n_files, dtype=np.int64)[::-1].copy()

    for reader in (blocks, in_turn):
        tracemalloc.start()
        try:
            files = counted(paths, reader)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert sum(f.n_events for f in files) == n_files * per_file
        assert peak < 10_000_000, (reader.__name__, peak)


def test_the_count_reads_through_the_module_reader_registry(tmp_path, monkeypatch):
    """What the submit path does: the format's reader from READERS, then count."""
    monkeypatch.setitem(datasets.READERS, "hepmc3", "tests.test_datasets:read_hepmc3")
    a = write_hepmc3(tmp_path / "data" / "a.hepmc", [1, 2, 3])
    paths = resolved(["data/*.hepmc"], tmp_path)
    reader = reader_for("hepmc3", source=SOURCE, field=FIELD, line=LINE)
    assert counted(paths, reader)[0].n_events == 3
    assert paths == [a]
