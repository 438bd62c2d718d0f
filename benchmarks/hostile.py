"""Hostile input, each case in a fresh process: the time and peak memory of every refusal.

    python -m benchmarks.hostile [NAME ...]     # all cases, or the ones named
    python -m benchmarks.hostile --quick        # the worst-looking ones, one of each family

Every case of ``benchmarks/hostile_cases.py`` has its files written here and then
runs ``es-run`` in a ``python`` of its own, so that the peak RSS is that case's
alone: the child's ``VmHWM`` (the high-water mark of its own memory since exec;
``os.wait4``'s ``ru_maxrss`` would also count the parent's memory the child was
forked with). One line per case: whether it kept the rule (one line on stderr,
exit 2, no traceback, nothing written), the refusal's own time (es-run already
imported), the process's wall time (interpreter and imports included) and its
peak RSS. The last line is JSON: the worst time and the worst peak memory, with
their cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import scratch
from benchmarks.hostile_cases import (
    CASES,
    LIMIT_MB,
    LIMIT_SECONDS,
    Case,
    Outcome,
    by_name,
    problems,
    run,
    snapshot,
)

ROOT = Path(__file__).resolve().parent.parent
#: A YAML bomb (int() of a long sexagesimal is quadratic), a huge number, a very long
#: string and a flood of keys: the cases that look the most expensive.
WORST_LOOKING = [
    "campaign-seed-sexagesimal-bomb",
    "set-number-5000-digits",
    "campaign-payload-name-5000-chars",
    "campaign-many-unknown-keys",
]


def measure(case: Case, tmp: Path) -> dict:
    """Run ``case`` in a fresh process; its outcome, problems, time and peak memory."""
    tmp.mkdir(parents=True, exist_ok=True)
    setup = case.build(tmp)
    try:
        before = snapshot(tmp)
        with tempfile.TemporaryDirectory(prefix="es-hostile-io-") as io:
            args, result = Path(io) / "args.json", Path(io) / "result.json"
            args.write_text(json.dumps(setup.args))
            start = time.perf_counter()
            with open(Path(io) / "stderr", "w+") as log:
                child = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.hostile", "--child", str(args), str(result)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                child.wait()
                wall = time.perf_counter() - start
                log.seek(0)
                crash = log.read()
            got = json.loads(result.read_text()) if result.exists() else None
        after = snapshot(tmp)
    finally:
        setup.cleanup()
    if got is None:
        outcome = Outcome(-1, "", crash, wall, RuntimeError(f"child exit {child.returncode}"))
    else:
        error = RuntimeError(got["exception"]) if got["exception"] else None
        outcome = Outcome(got["code"], got["stdout"], got["stderr"], got["seconds"], error)
    return {
        "case": case.name,
        "code": outcome.code,
        "seconds": outcome.seconds,
        "wall": wall,
        "peak_mb": got["peak_kib"] / 1024 if got else float("nan"),
        "problems": problems(setup, outcome, before, after),
        "line": (outcome.stdout + outcome.stderr).strip(),
    }


def _peak_kib() -> int:
    """This process's peak resident memory since exec, in KiB (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def _child(args_file: str, result_file: str) -> None:
    outcome = run(json.loads(Path(args_file).read_text()))
    error = outcome.exception
    Path(result_file).write_text(
        json.dumps(
            {
                "code": outcome.code,
                "stdout": outcome.stdout,
                "stderr": outcome.stderr,
                "seconds": outcome.seconds,
                "exception": f"{type(error).__name__}: {error}" if error else None,
                "peak_kib": _peak_kib(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="cases to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="the worst-looking cases only")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        _child(*options.child)
        return
    names = options.names or (WORST_LOOKING if options.quick else [c.name for c in CASES])
    if options.quick:
        names += [next(c.name for c in CASES if c.family == f) for f in ("site", "cli", "output")]
    cases = [by_name(n) for n in names]
    reports = []
    for case in cases:
        with scratch("es-hostile-") as tmp:
            report = measure(case, tmp / "case")
        reports.append(report)
        verdict = "ok  " if not report["problems"] else "FAIL"
        print(
            f"{verdict} {report['case']:48} exit {report['code']}  {report['seconds']:6.3f} s  "
            f"{report['wall']:5.2f} s wall  {report['peak_mb']:6.1f} MB"
            + (f"  {'; '.join(report['problems'])}" if report["problems"] else ""),
            flush=True,
        )
    slowest = max(reports, key=lambda r: r["seconds"])
    slowest_wall = max(reports, key=lambda r: r["wall"])
    largest = max(reports, key=lambda r: r["peak_mb"])
    summary = {
        "cases": len(reports),
        "failed": [r["case"] for r in reports if r["problems"]],
        "worst_seconds": {"case": slowest["case"], "seconds": round(slowest["seconds"], 3)},
        "worst_wall_seconds": {
            "case": slowest_wall["case"],
            "seconds": round(slowest_wall["wall"], 2),
        },
        "worst_peak_mb": {"case": largest["case"], "mb": round(largest["peak_mb"], 1)},
        "limits": {"seconds": LIMIT_SECONDS, "mb": LIMIT_MB},
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
