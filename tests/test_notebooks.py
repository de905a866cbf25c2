"""The notebooks in ``notebooks/``: committed executed and current, and they run end to end.

The fast tests read the committed files only. The slow tests execute every ``notebooks/*.ipynb``
in a fresh kernel started from this interpreter, working directory ``notebooks/``, in memory (the
committed files are not rewritten; ``python notebooks/execute.py`` does that), and fail on the first
cell that raises.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_notebooks_execute", ROOT / "notebooks" / "execute.py")
nbexec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbexec)

NOTEBOOKS = nbexec.notebook_paths()
NAMES = [p.name for p in NOTEBOOKS]


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_notebooks_exist():
    assert {"01_quickstart.ipynb", "02_hallucination_reduction.ipynb", "03_langchain_llamaindex.ipynb"} <= set(NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_committed_notebook_was_executed_after_its_last_edit(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = _code_cells(nb)
    assert code, "a notebook without code cells"
    stale = "re-run `python notebooks/execute.py` and commit the result"
    # executed top to bottom in one kernel, by notebooks/execute.py, from the sources now committed
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), stale
    assert nb.metadata.get("oscillink", {}).get("source_sha256") == nbexec.source_digest(nb), stale
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert nbexec.machine_specific(nbexec.output_text(nb)) == []
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all("execution" not in c.metadata for c in code), "per-cell timestamps are volatile noise"


def test_source_digest_sees_source_edits_only():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("hi")])
    before = nbexec.source_digest(nb)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="noise\n")]
    nb.cells[0].execution_count = 7
    assert nbexec.source_digest(nb) == before
    nb.cells[1].source = "hi!"
    assert nbexec.source_digest(nb) != before
    nb.cells[1].source = "hi"
    nb.cells[1].cell_type = "raw"
    assert nbexec.source_digest(nb) != before


def test_machine_specific_output_is_detected():
    assert nbexec.machine_specific("rank 1: bees-03\n") == []
    assert nbexec.machine_specific(f"loaded {ROOT / 'examples'}\n")
    assert nbexec.machine_specific(f"{Path.home()}/.cache/x")
    assert nbexec.machine_specific("Batches: 100%|#####| 2/2 [00:00<00:00, 12.1it/s]")


def _scratch_notebook(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "scratch.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), str(path))
    return path


@pytest.mark.slow
def test_kernel_is_this_interpreter_offline_in_notebooks_dir(tmp_path):
    path = _scratch_notebook(tmp_path, "import os, sys\nprint(sys.executable)\nprint(os.getcwd())",
                             "print(os.environ.get('HF_HUB_OFFLINE'))")
    nb = nbexec.execute(path, timeout=120)
    exe, cwd = nb.cells[0].outputs[0].text.split()
    assert Path(exe) == Path(sys.executable)
    assert Path(cwd).resolve() == (ROOT / "notebooks").resolve()
    assert nb.cells[1].outputs[0].text.strip() == "1"


@pytest.mark.slow
def test_a_failing_cell_fails_the_run(tmp_path):
    from nbclient.exceptions import CellExecutionError

    path = _scratch_notebook(tmp_path, "x = 1", "raise RuntimeError('boom in cell 2')", "print('never')")
    with pytest.raises(CellExecutionError, match="boom in cell 2"):
        nbexec.execute(path, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_end_to_end(path):
    nb = nbexec.execute(path)  # raises CellExecutionError on the first failing cell
    code = _code_cells(nb)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert nbexec.machine_specific(nbexec.output_text(nb)) == []
