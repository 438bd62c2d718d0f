"""The quick-start notebook, executed by a real Jupyter kernel (nbclient + ipykernel)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

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
    assert "complete" in nb.cells[-1].outputs[-1].get("text", "")
