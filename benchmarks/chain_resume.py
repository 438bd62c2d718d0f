"""A chain's driver killed in the middle of reconstruction, then resumed: nothing redone.

Runs the shipped ``mc-chain`` (evgen -> simul -> reco) at ``--events`` with
``es-run submit``, SIGKILLs the driver with its interchange and workers (its
process group: a node lost) once reconstruction has done a few ranges and
every step is under way, then ``es-run resume`` and ``es-run validate``. Prints
what each step had done before the kill, how many of those ranges ran again
(0 is exactly once), the resume's wall time and the validation's verdict.

    python -m benchmarks.chain_resume [--events 1200]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import report, scratch
from parsl_es.campaign import shipped_campaigns
from parsl_es.ledger import Ledger
from parsl_es.states import RangeState

ES_RUN = str(Path(sys.executable).parent / "es-run")
DONE = (RangeState.DONE, RangeState.MERGED)


def done_ranges(out: Path) -> dict[str, dict[int, int]]:
    """Per step: done or merged ranges and their attempts."""
    with Ledger.open(out / "ledger.sqlite", readonly=True) as ledger:
        return {
            name: {r.index: r.attempts for r in step.ranges(DONE)} for name, step in ledger.steps()
        }


def kill_in_reco(campaign: Path, out: Path) -> tuple[float, dict[str, dict[int, int]]]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [ES_RUN, "submit", str(campaign), "-o", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise SystemExit("the chain finished before reconstruction could be caught")
            if not (out / "ledger.sqlite").exists():
                continue
            try:
                done = done_ranges(out)
            except Exception:  # the ledger is being created
                continue
            if len(done.get("reco", {})) >= 3 and all(done.values()):
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.monotonic() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1200)
    args = parser.parse_args()
    with scratch("es-chain-resume-") as tmp:
        spec = yaml.safe_load(shipped_campaigns()["mc-chain"].read_text())
        spec["events"] = args.events
        campaign = tmp / "mc-chain.yaml"
        campaign.write_text(yaml.safe_dump(spec, sort_keys=False))
        out = tmp / "out"
        killed_at, before = kill_in_reco(campaign, out)
        t0 = time.monotonic()
        resumed = subprocess.run([ES_RUN, "resume", str(out)], capture_output=True, text=True)
        resume_s = time.monotonic() - t0
        after = done_ranges(out)
        valid = subprocess.run([ES_RUN, "validate", str(out)], capture_output=True, text=True)
    redone = {
        name: sum(1 for i, a in done.items() if after[name].get(i) != a)
        for name, done in before.items()
    }
    figures = {
        "benchmark": "chain_resume",
        "events": args.events,
        "killed_after_s": round(killed_at, 1),
        "done_before_kill": {name: len(done) for name, done in before.items()},
        "redone_after_resume": redone,
        "resume_exit": resumed.returncode,
        "resume_wall_s": round(resume_s, 1),
        "validate_exit": valid.returncode,
        "validate": valid.stdout.strip().splitlines()[-1:] or valid.stderr.strip()[-200:],
    }
    report(
        figures,
        f"killed after {killed_at:.1f} s with {figures['done_before_kill']} ranges done; "
        f"resume exit {resumed.returncode} in {resume_s:.1f} s; redone {redone}; "
        f"validate exit {valid.returncode}",
    )


if __name__ == "__main__":
    main()
