"""bench/class_bias.py and bench/tta.py on tiny runs: every variant scored on valid and test, the plain test row
(and tta.py's mirrored one) equal to eval.py's own metrics, and a clear error for a run trained without class
weights."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_eval import run_eval
from test_train import FAST, run

from bench import tta

ROOT = Path(__file__).resolve().parents[1]


def bench(model, data):
    return subprocess.run([sys.executable, "bench/class_bias.py", "--model", str(model), "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_variants_on_both_stages_and_the_plain_row_matches_eval(tiny_dataset, tmp_path):
    r = run([*FAST, "--pretrained", "False", "--class_weights", "sqrt_inv"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    out = bench(r.runs[0], tiny_dataset)
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line.split() for line in out.stdout.splitlines()]
    scored = {(" ".join(row[:-9]), row[-9]): [float(v) for v in row[-8:]] for row in table
              if len(row) >= 10 and row[-9] in ("valid", "test")}
    assert set(scored) == {(v, s) for v in ("none", "-0.5 log w", "-log w") for s in ("valid", "test")}
    code, _ = run_eval(["--model", str(r.runs[0]), "--data", str(tiny_dataset), "--split", "test",
                        "--out", str(tmp_path / "eval")])
    assert code == 0
    metrics = json.loads(next((tmp_path / "eval").glob("*/metrics.json")).read_text())
    assert scored[("none", "test")][0] == pytest.approx(metrics["test_miou"], abs=2e-3)  # mIoU, printed to 3 places


def test_a_run_without_class_weights_is_refused(tiny_dataset, tmp_path):
    r = run([*FAST, "--pretrained", "False"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    out = bench(r.runs[0], tiny_dataset)
    assert out.returncode != 0 and "trained without class weights" in out.stderr


def test_tta_bench_scores_every_variant_and_matches_eval(tiny_dataset, tmp_path):
    r = run([*FAST, "--pretrained", "False"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    out = subprocess.run([sys.executable, "bench/tta.py", "--model", str(r.runs[0]), "--data", str(tiny_dataset)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    scored = {(" ".join(row[:-9]), row[-9]): float(row[-8]) for row in rows
              if len(row) >= 10 and row[-9] in ("valid", "test")}
    variants = ("as trained", "flip", "x1.25", "x1.5", "x1 + x1.5", "x1 + x1.5, flip")
    assert set(scored) == {(v, s) for v in variants for s in ("valid", "test")}
    for mirror in (False, True):  # the plain and mirrored rows are eval.py's own scores, without and with --tta
        code, _ = run_eval(["--model", str(r.runs[0]), "--data", str(tiny_dataset), "--split", "test", "--tta",
                            str(mirror), "--out", str(tmp_path / f"eval{mirror}")])
        assert code == 0
        metrics = json.loads(next((tmp_path / f"eval{mirror}").glob("*/metrics.json")).read_text())
        assert scored[("flip" if mirror else "as trained", "test")] == pytest.approx(metrics["test_miou"], abs=2e-3)


def test_tta_mirrored_logits_are_the_mirrored_image_mirrored_back():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 7, 3, padding=1)  # random kernel: not mirror-symmetric
    x = torch.rand(1, 3, 6, 8)
    plain, mirrored = (tta.logits(model, x, m, (12, 16), "fp32") for m in (False, True))
    expected = F.interpolate(model(x.flip(-1)).flip(-1), size=(12, 16), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(mirrored, expected)
    assert plain.shape == (7, 12, 16) and not torch.allclose(plain, mirrored)
    assert tta.scaled((240, 320), 1.5) == (360, 480) and tta.scaled((232, 310), 1.25) == (290, 388)
