"""The tutorials run headless, top to bottom, so they cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

CHATTER = ("GPU available", "TPU available", "litlogger", "attempting to transfer AnnData",
           "LeafSpec", "log_every_n_steps", "Seed set to")
NOTEBOOKS = sorted((Path(__file__).parents[1] / "tutorials").glob("*.ipynb"))


def test_tutorials_found():
    assert NOTEBOOKS, "no notebooks in tutorials/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tutorial_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    if nb.metadata.get("scattn", {}).get("needs_shared_data"):
        from scattn.datasets import shared_data_dir

        data = shared_data_dir()
        if data is None:
            pytest.skip("needs ../shared/data (or $SCATTN_DATA_DIR)")
        # the kernel runs in a temporary directory: tell it where the data are
        monkeypatch.setenv("SCATTN_DATA_DIR", str(data.resolve()))
    # the notebook's working directory is a temporary one: nothing is written next to it
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # quiet by default: a notebook shows what the user must act on, not library banners
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    chatter = [c for c in CHATTER if c in text]
    assert not chatter, f"library chatter in {path.name}: {chatter}"
