"""A real 3-trial offline sweep of train.py with the project's sweep.yaml, on the tiny dataset."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_programs.sweep_helpers import env_for, trials

from bddseg.sweeper.study import best_trial

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "train.py").exists(), reason="train.py is not written yet")


def test_three_trials_of_train_py(tmp_path, tiny_dataset):
    storage = tmp_path / "sweeps.journal"
    pins = {"epochs": 1, "img_size": 64, "pretrained": False, "batch_size": 4, "num_workers": 0, "arch": "resnet18",
            "data": tiny_dataset, "output": tmp_path / "models"}
    argv = [sys.executable, "sweep.py", "--storage", storage, "sweep.yaml", "--name", "train-test", "--count", 3,
            "--max-consecutive-failures", 1] + [a for k, v in pins.items() for a in ("--param", f"{k}={v}")]
    r = subprocess.run([str(a) for a in argv], cwd=ROOT, env=env_for(tmp_path), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sid = r.stdout.split("sweep ")[1].split()[0]
    ts = trials(storage, sid)
    assert len(ts) == 3 and all(t.state.name == "COMPLETE" for t in ts), r.stdout
    for t in ts:
        lines = [json.loads(x) for x in Path(t.user_attrs["log"]).with_name("metrics.jsonl").read_text().splitlines()]
        assert len(lines) == 1 and t.value == pytest.approx(lines[-1]["miou"]) and 0 <= t.value <= 1
        assert t.user_attrs["config"]["img_size"] == 64 and f"--lr={t.params['lr']}" in t.user_attrs["command"]
        assert 1e-5 <= t.params["lr"] <= 1e-2  # sampled from sweep.yaml's log_uniform_values
    best = best_trial("train-test", storage)
    assert best["value"] == max(t.value for t in ts)
    assert (Path(best["run_dir"]) / "meta.json").exists()  # train.py names its run folder in the metric lines
    assert Path(best["run_dir"]).parent.parent == tmp_path / "models"
