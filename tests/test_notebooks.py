"""Every notebook runs top to bottom in a fresh kernel (this venv's python) on tiny data, offline, writing only to
temp folders; the committed notebooks carry no outputs.

Parameters are overridden papermill-style: a cell with the overrides goes right after the cell tagged
`parameters`. A probe cell appended at the end prints what the notebook computed, for checks made here
independently of it. Set KEEP_EXECUTED_NOTEBOOKS=DIR to keep the executed copies for a look.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import optuna
import pandas as pd
import pytest
from fake_programs.sweep_helpers import FAKE_TRAIN, write_config
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from PIL import Image

import params
from bddseg import layout
from bddseg.sweeper import storage as st
from bddseg.sweeper.agent import run_agent
from bddseg.sweeper.config import load_config
from bddseg.sweeper.study import create_sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_eda.ipynb", "02_split.ipynb", "03_baseline.ipynb", "04_sweep_analysis.ipynb"]
KERNEL = "bddseg-venv"
CELL_TIMEOUT = 300
PROBE = "@@probe@@"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A kernelspec that runs this interpreter, and a tiny raw + processed dataset made by data/prepare.py."""
    ws = tmp_path_factory.mktemp("notebooks")
    spec = ws / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bddseg (venv)", "language": "python"}))
    r = subprocess.run([sys.executable, "data/prepare.py", "--n", "30", "--size", "224x126", "--no-wandb",
                        "--workers", "1", "--out", str(ws / "artifacts")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return ws


@pytest.fixture
def nb_env(workspace, tmp_path, monkeypatch):
    """Kernel environment: the temp kernelspec, the tiny artifacts, every output folder under tmp_path."""
    monkeypatch.setenv("JUPYTER_PATH", str(workspace / "jupyter"))
    monkeypatch.setenv("BDDSEG_ARTIFACTS", str(workspace / "artifacts"))
    for var, sub in (("BDDSEG_MODELS", "models"), ("BDDSEG_EVAL", "eval"), ("BDDSEG_SWEEPS", "sweeps_db"),
                     ("BDDSEG_REPORTS", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # debugpy's frozen-modules warning on kernel start
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    return tmp_path


def run_notebook(name, overrides, probe):
    """Execute a notebook with overridden parameters (cwd notebooks/, as Jupyter would); returns (nb, probe dict)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import json as _json, sys as _sys\nprint({PROBE!r} + _json.dumps({{'python': _sys.executable, {probe}}}, "
        f"default=str))"))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "the notebook wrote into notebooks/"
    if os.environ.get("KEEP_EXECUTED_NOTEBOOKS"):  # a folder to keep the executed copies in, for a look
        nbformat.write(nb, Path(os.environ["KEEP_EXECUTED_NOTEBOOKS"]) / name)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    found = json.loads(text.split(PROBE, 1)[1])
    assert Path(found["python"]).resolve() == Path(sys.executable).resolve()  # the venv's interpreter ran it
    return nb, found


def outputs(nb, mime):
    """Number of outputs of a given MIME type (image/png, application/vnd.plotly.v1+json) over all cells."""
    return sum(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_committed_notebooks_are_clean_and_start_with_parameters():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: outputs not stripped"
        assert "parameters" in code[0].metadata.get("tags", []), f"{name}: first code cell is not tagged parameters"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{name}: no title"


def test_eda(nb_env, workspace):
    nb, got = run_notebook("01_eda.ipynb", {"N_SAMPLES": 2, "N_CLOSEUPS": 2},
                           "'root': str(root), 'n': len(eda), 'pixel_share': summary.pixel_share.to_dict()")
    raw = workspace / "artifacts" / params.RAW_DATA_AT
    assert Path(got["root"]) == raw.resolve() and got["n"] == 30  # the artifact name resolved to the local copy
    masks = [np.asarray(Image.open(p)) for p in sorted((raw / layout.LABELS).glob("*.png"))]
    shares = [np.mean([np.mean(m == c) for m in masks]) for c in params.BDD_CLASSES]  # mean per-image pixel share
    assert list(got["pixel_share"]) == list(params.BDD_CLASSES.values())
    assert np.allclose(list(got["pixel_share"].values()), shares, atol=1e-5)
    assert outputs(nb, "image/png") >= 3  # class bars, masks per class, rare-class close-ups


def test_split(nb_env, workspace):
    nb, got = run_notebook("02_split.ipynb", {}, "'split': split_df.to_dict('list'), 'same': same")
    stored = pd.read_csv(workspace / "artifacts" / params.PROCESSED_DATA_AT / layout.SPLIT_CSV)
    assert got["same"] is True and got["split"]["Stage"] == stored.Stage.tolist()  # re-made = stored
    stages = {}
    for f, s in zip(got["split"]["File_Name"], got["split"]["Stage"]):
        stages.setdefault(layout.video_of(f), set()).add(s)
    assert all(len(s) == 1 for s in stages.values()) and set().union(*stages.values()) == set(layout.STAGES)
    assert outputs(nb, "image/png") >= 1


def test_split_notebook_fails_on_a_video_in_two_stages(nb_env, workspace, tmp_path):
    data = shutil.copytree(workspace / "artifacts" / params.PROCESSED_DATA_AT, tmp_path / "leaky_split")
    df = pd.read_csv(data / layout.SPLIT_CSV)
    test_rows = df.index[df.Stage == "test"]
    df.loc[test_rows[0], "Stage"] = "train"  # one frame of a test video moves to train
    df.to_csv(data / layout.SPLIT_CSV, index=False)
    with pytest.raises(CellExecutionError, match="videos in more than one stage"):
        run_notebook("02_split.ipynb", {"DATA": str(data)}, "")


def test_baseline(nb_env):
    nb, got = run_notebook("03_baseline.ipynb",
                           {"IMG_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 8, "LR_FIND_ITERS": 10, "PRETRAINED": False},
                           "'run_id': run.wandb.id, 'run_dir': str(run_dir), 'final': final, 'lr': lr, 'where': str(where)")
    run_dir = Path(got["run_dir"])
    assert run_dir.parent.parent == nb_env / "models"  # BDDSEG_MODELS, not the repo
    assert {"model.safetensors", "meta.json", "metrics.jsonl", "summary.json", "config.json"} <= \
        {p.name for p in run_dir.iterdir()}
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and got["final"]["final_miou"] == pytest.approx(lines[0]["miou"], abs=1e-4)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["run_id"] == got["run_id"] and meta["config"]["lr"] == pytest.approx(got["lr"])  # lr_find's pick
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    where = Path(got["where"])
    assert where.name.startswith("offline-run-") and where.name.endswith(got["run_id"]) and where.is_dir()
    assert outputs(nb, "image/png") >= 4  # batch, lr_find, loss, IoU bars, predictions


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_sweep_analysis(nb_env, monkeypatch):
    monkeypatch.setattr("bddseg.config.SWEEPS_DIR", nb_env / "sweeps_db")  # this process's agent: trial folders in tmp
    journal = nb_env / "sweeps_db" / st.JOURNAL_NAME  # the default storage under BDDSEG_SWEEPS
    config = load_config(write_config(nb_env / "sweep.yaml", {
        "x": {"min": 0.0, "max": 1.0}, "arch": {"values": ["resnet18", "resnet34"]},
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, "epochs": {"value": 2}},
        method="random", name="notebook-test"))
    sid, _ = create_sweep(config, st.get_storage(journal))
    create_sweep(config, st.get_storage(journal))  # a newer sweep, with no trials: the notebook must take ours by id
    with open(nb_env / "agent.log", "w") as log:  # two agents, one per encoder: both values certainly occur
        for arch in ("resnet18", "resnet34"):
            assert run_agent(sid, str(journal), count=2, pins={"arch": arch}, out=log) == 0
    nb, got = run_notebook("04_sweep_analysis.ipynb", {"SWEEP_ID": sid},
                           "'best': best, 'n': len(df), 'categorical': categorical")
    trials = optuna.load_study(study_name=sid, storage=st.get_storage(journal)).get_trials()
    top = max(trials, key=lambda t: t.value)
    assert got["n"] == 4 and got["best"]["number"] == top.number and got["best"]["value"] == pytest.approx(top.value)
    command = got["best"]["command"]  # the exact command the agent ran for the best trial
    assert str(FAKE_TRAIN) in command and f"--x={top.user_attrs['config']['x']}" in command
    assert got["categorical"] == ["arch"]  # the per-value table covers the sweep's `values` parameter only
    assert outputs(nb, "application/vnd.plotly.v1+json") >= 3  # parallel coordinates, history, importance (+ strip)
