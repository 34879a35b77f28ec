"""experiments/colab.ipynb: stored without outputs, its Colab setup cell, and a full tiny run.

The run executes every cell in a real Jupyter kernel (nbclient), with the notebook's size knobs
set to the tiny dataset and 6 steps, so an API change that breaks the notebook fails here.
"""
from __future__ import annotations

import json
import os
import string
import sys
import types

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab.ipynb")
STEPS = 6
METHODS = ("monomodal", "emobed")

# Appended to the in-memory copy only: which Python ran the kernel, and the notebook's results.
_SUMMARY_CELL = """
import json, sys
print("SUMMARY " + json.dumps({
    "executable": sys.executable,
    "steps": {m: results[m]["step"] for m in METHODS},
    "validation": {m: results[m]["metrics"]["validation"]["ccc_mean"] for m in METHODS},
    "restored": {m: evals[m]["validation"]["ccc_mean"] for m in METHODS},
    "restored_step": {m: evals[m]["validation"]["step"] for m in METHODS},
    "similarity": similarity,
    "run_dir": RUN_DIR,
}))
"""


def _read():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_is_stored_without_outputs():
    nb = _read()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{NOTEBOOK} cell {i} holds outputs; clear them before committing")


class _FakeShell:
    """Records `!` commands instead of running them (IPython expands {names} from the cell)."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.commands = []

    def system(self, command):
        self.commands.append(string.Formatter().vformat(command, (), self.namespace))


def _run_setup_cell(monkeypatch, cwd, in_colab: bool, repo_url: str = ""):
    source = next(c.source for c in _read().cells if c.cell_type == "code")
    assert 'REPO_URL = ""' in source, "the setup cell must ship with an empty REPO_URL placeholder"
    source = source.replace('REPO_URL = ""', f"REPO_URL = {repo_url!r}", 1)
    monkeypatch.chdir(cwd)
    # The cell prepends the clone to sys.path; start without it so that is visible.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != ROOT])
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    shell = _FakeShell(namespace)
    namespace["get_ipython"] = lambda: shell
    exec(compile(TransformerManager().transform_cell(source), "setup_cell", "exec"), namespace)
    return namespace, shell.commands


def test_setup_cell_outside_colab_installs_nothing(monkeypatch):
    namespace, commands = _run_setup_cell(monkeypatch, os.path.join(ROOT, "experiments"), False)
    assert commands == []
    assert namespace["REPO_ROOT"] == ROOT
    assert sys.path[0] == ROOT


def test_setup_cell_in_colab_installs_the_clone(monkeypatch):
    namespace, commands = _run_setup_cell(monkeypatch, ROOT, True)
    assert commands == [f"pip install -q -e {ROOT}"]


def test_setup_cell_in_colab_clones_repo_url(monkeypatch, tmp_path):
    url = "https://example.org/emobed-jax.git"
    namespace, commands = _run_setup_cell(monkeypatch, tmp_path, True, url)
    clone = namespace["COLAB_CLONE"]
    assert commands == [f"git clone -q --depth 1 {url} {clone}", f"pip install -q -e {clone}"]
    assert sys.path[0] == clone


def test_setup_cell_in_colab_without_repo_url_says_what_to_set(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="REPO_URL is empty"):
        _run_setup_cell(monkeypatch, tmp_path, True)


def test_notebook_runs_top_to_bottom(synthetic_data_dir, tmp_path, monkeypatch):
    # The kernel inherits this environment (also conftest's two CPU devices).
    monkeypatch.setenv("EMOBED_NOTEBOOK_STEPS", str(STEPS))
    monkeypatch.setenv("EMOBED_NOTEBOOK_DATA", "tiny")
    monkeypatch.setenv("EMOBED_NOTEBOOK_DATA_DIR", synthetic_data_dir)
    monkeypatch.setenv("EMOBED_NOTEBOOK_DIR", str(tmp_path))
    # Keep Jupyter's connection files and IPython's profile out of the home directory.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = _read()
    nb.cells.append(nbformat.v4.new_code_cell(_SUMMARY_CELL))
    # Runs in experiments/, as Jupyter would; raises CellExecutionError naming a failing cell.
    NotebookClient(nb, kernel_name="python3", timeout=240,
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    # dataset example, 2 evaluation prediction plots, the comparison, 2 embedding maps
    assert len(images) == 7, text
    summary = json.loads(text.split("SUMMARY ", 1)[1].splitlines()[0])
    assert os.path.realpath(summary["executable"]) == os.path.realpath(sys.executable)
    assert summary["steps"] == {m: STEPS for m in METHODS}
    for m in METHODS:
        assert summary["restored"][m] == pytest.approx(summary["validation"][m], abs=1e-5)
        assert summary["restored_step"][m] in (2, 4, 6)
    before, after = summary["similarity"]["before"], summary["similarity"]["after"]
    assert all(-1.0 <= v <= 1.0 for v in before + after)
    assert before != after  # the maps were drawn from different parameters
    assert "before training (step 0)" in text
    run_dir = summary["run_dir"]
    assert run_dir == os.path.join(str(tmp_path), f"runs_tiny_{STEPS}steps")
    for m in METHODS:
        for name in ("results.json", "eval_validation.json", "predictions_validation.csv",
                     "plot_predictions_validation.png"):
            assert os.path.isfile(os.path.join(run_dir, m, name)), (m, name)
    for stage in ("before", "after"):
        with open(os.path.join(run_dir, "emobed", f"embedding_map_{stage}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
