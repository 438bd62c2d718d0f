"""The quick-start notebook, executed by a real Jupyter kernel (nbclient + ipykernel)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).parent.parent / "workflows" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_shows_progress_and_pictures(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], outputs
    text = json.dumps([o.get("text", "") for o in outputs] + [o.get("data", {}) for o in outputs])
    # the progress summary, live display and final line
    assert "campaign quickstart-output: 40/40 events" in text
    assert "<progress" in text
    assert "campaign complete" in text
    # the status table and the merged files
    assert "merge groups" in text and "quickstart.merge-000001.root" in text
    # at least one picture: the report's timeline and physics histograms
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "quickstart-output" / "report" / "index.html").is_file()
    # a second campaign in the same kernel
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert "complete" in last, nb.cells[-1].outputs


def test_interrupting_a_wait_cancels_gracefully_and_leaves_no_workers(tmp_path):
    """Ctrl-C (a kernel interrupt) while waiting: the campaign stops, the workers go."""
    import subprocess
    import sys
    import time

    import psutil

    code = f"""
import os, signal, threading, time
import parsl_es
# (20 s of work on 2 workers: the interrupt comes about 0.5 s in, however loaded the
# machine; at 10 s the campaign once finished first under CI's load)
h = parsl_es.submit(dict(name="intr", events=400, events_per_range=1, events_per_merge=100,
                         seed=1, payload=dict(name="emulate", seconds_per_event=0.1)),
                    output={str(tmp_path / "out")!r}, show=False)
while (h.progress is None or h.progress.events_done < 10) and not h.done:
    time.sleep(0.1)
# (what the waiting saw: if the campaign ends before the interrupt, the failure says how)
print("SEEN", h.progress and h.progress.events_done, h.done, flush=True)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    h.wait()
except KeyboardInterrupt:
    print("interrupted", flush=True)
result = h.wait()
print("STATUS", result.status, flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interrupted" in proc.stdout and "STATUS stopped" in proc.stdout, proc.stdout
    deadline = time.time() + 20
    while time.time() < deadline:
        left = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info.get("cmdline") or [])
        ]
        if not left:
            break
        time.sleep(0.5)
    assert not left, "worker pools left behind"
