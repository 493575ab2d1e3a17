"""The teaching notebooks run top to bottom (so they cannot rot), show their figures, and are stored without outputs."""

import functools
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: The backend Jupyter gives a kernel: figures appear as image/png outputs (unless library code switched it).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def test_there_are_five_notebooks():
    assert len(NOTEBOOKS) == 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear outputs before committing"


@functools.cache
def executed(path: Path):
    """The notebook after running it in a kernel with Jupyter's inline figure backend (once per test session)."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # the kernel inherits it
    try:
        NotebookClient(book, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if saved is None:
            del os.environ["MPLBACKEND"]
        else:
            os.environ["MPLBACKEND"] = saved
    return book


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path):
    errors = [o for c in executed(path).cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_the_learning_curve_of_notebook_4_is_shown():
    """Training (library code) leaves the notebook's figure backend alone: the learning curve appears as an image."""
    path = next(p for p in NOTEBOOKS if p.stem.startswith("04_"))
    cell = next(c for c in executed(path).cells if "learning-curve" in c.metadata.get("tags", []))
    assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.outputs
