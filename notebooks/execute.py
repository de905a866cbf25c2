"""Execute the notebooks in ``notebooks/`` with the project's Python and save their outputs.

    .venv/bin/python notebooks/execute.py                  # every notebooks/*.ipynb, in place
    .venv/bin/python notebooks/execute.py notebooks/01_quickstart.ipynb --check   # run, write nothing

Each notebook runs in a fresh kernel started from *this* interpreter (``sys.executable``), with a
kernelspec written to a temporary directory, so the kernel never resolves to another Python on the
PATH or to a user-level ``python3`` kernelspec. The working directory is ``notebooks/`` (what Jupyter
uses when a notebook in it is opened); the notebooks find the repository root by walking up from
there. The kernel runs offline (``HF_HUB_OFFLINE=1``) with progress bars disabled.

Before saving, volatile metadata is dropped (per-cell execution timestamps) and the kernelspec is
reset to the standard ``python3``, so the saved file opens anywhere. ``metadata.oscillink.source_sha256``
records a digest of the cell sources that were executed: ``tests/test_notebooks.py`` checks it
against the committed sources, so a notebook edited without being re-executed fails the tests.

``tests/test_notebooks.py`` imports this module and runs every notebook in memory (the committed
files are never rewritten by the tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOK_DIR.parent
KERNEL_NAME = "oscillink-core-venv"
CELL_TIMEOUT_S = 300
KERNEL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
STANDARD_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook_paths() -> list[Path]:
    """Every ``notebooks/*.ipynb`` (checkpoints excluded), sorted by name."""
    return sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if not p.name.startswith("."))


def source_digest(nb: nbformat.NotebookNode) -> str:
    """SHA-256 over the cell types and sources, in order (outputs and metadata excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        h.update(json.dumps([cell.cell_type, src]).encode("utf-8"))
    return h.hexdigest()


def _write_kernelspec(root: Path) -> Path:
    kdir = root / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.executable})", "language": "python", "env": KERNEL_ENV}
    (kdir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return kdir.parent


def execute(path: Path | str, *, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return it with its outputs.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first cell that fails and
    ``nbclient.exceptions.CellTimeoutError`` when a cell runs longer than ``timeout`` seconds.
    Nothing is written to disk.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory(prefix="oscillink-nb-") as tmp:
        ksm = KernelSpecManager(kernel_dirs=[str(_write_kernelspec(Path(tmp)))], ensure_native_kernel=False)
        km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL_NAME, allow_errors=False,
                                record_timing=False, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
        client.execute(cleanup_kc=True)
    nb.metadata["kernelspec"] = dict(STANDARD_KERNELSPEC)
    nb.metadata["oscillink"] = {"source_sha256": source_digest(nb), "executed_by": "notebooks/execute.py"}
    return nb


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def output_text(nb: nbformat.NotebookNode) -> str:
    """All text the code cells produced (streams, plain-text results, errors), ANSI codes removed."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                data = out.get("data", {})
                parts.extend(data.get(mime, "") for mime in ("text/plain", "text/markdown", "text/html"))
            elif out.output_type == "error":
                parts.append("\n".join(out.get("traceback", [])))
    return _ANSI.sub("", "\n".join(parts))


def machine_specific(text: str) -> list[str]:
    """Absolute paths of this machine or progress-bar residue found in ``text`` (empty when clean)."""
    found = []
    for needle in {str(REPO_ROOT), str(Path.home()), sys.prefix, tempfile.gettempdir() + os.sep}:
        if len(needle) > 1 and needle in text:
            found.append(f"absolute path {needle!r}")
    if re.search(r"\d+(\.\d+)?(it/s|s/it)\]", text) or "\r" in text:
        found.append("progress-bar output")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    ap.add_argument("--check", action="store_true", help="execute but do not write the results")
    ap.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = args.notebooks or notebook_paths()
    status = 0
    for path in paths:
        t0 = time.perf_counter()
        nb = execute(path, timeout=args.timeout)
        problems = machine_specific(output_text(nb))
        rel = os.path.relpath(Path(path).resolve(), REPO_ROOT)
        if problems:
            print(f"{rel}: outputs contain {', '.join(problems)}; not written", file=sys.stderr)
            status = 1
            continue
        if not args.check:
            nbformat.validate(nb)
            nbformat.write(nb, str(path))
        print(f"{rel}: executed in {time.perf_counter() - t0:.1f} s{'' if args.check else ', saved'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
