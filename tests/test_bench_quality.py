"""bench/quality.py runs both arms end to end on tiny data (a few seconds of budget) and reports comparable figures.

The figures themselves are the bench's job; this checks the plumbing: the test folder import, both arms trained and
scored on the same images, the side-by-side table and quality.json.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bddseg import layout
from bddseg.metrics import CLASS_KEYS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    test_images, test_masks = tmp / "timg", tmp / "tmask"  # a plain image/mask folder pair, as a user passes it
    test_images.mkdir()
    test_masks.mkdir()
    for name in layout.read_split(tiny_dataset, "test").File_Name:
        (test_images / name).symlink_to(layout.image_path(tiny_dataset, name))
        (test_masks / f"{Path(name).stem}.png").symlink_to(layout.label_path(tiny_dataset, name))
    cmd = [sys.executable, "bench/quality.py", "--data", str(tiny_dataset), "--test-images", str(test_images),
           "--test-masks", str(test_masks), "--budget", "0.03", "--out", str(tmp / "out"),
           "--arms", "recipe-fp32", "course", "--train-args", "--img_size 48"]  # no size probe at 240 px
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, json.loads((tmp / "out" / "quality.json").read_text())


def test_both_arms_scored_on_the_same_test_images(quality):
    r, q = quality
    assert q["test_images"] == 2 and q["budget_min"] == 0.03
    assert [x["name"] for x in q["results"]] == ["person-fp32", "course-fp32"]  # bf16 off: the recipe ran in fp32
    assert q["cpu"] and isinstance(q["cpu_bf16"], bool) and "native bf16" in r.stdout
    for x in q["results"]:
        assert x["epochs"] >= 1 and x["best_epoch"] >= 1 and x["seconds"] < 120
        for key in ["miou", "pixel_acc", *(f"{c}_iou" for c in CLASS_KEYS)]:
            v = x["test"][key]
            assert v is None or 0 <= v <= 1, (x["name"], key, v)  # nan is written as null
        assert 0 < x["test"]["pixel_acc"] <= 1
    assert q["results"][0]["config"]["loss"] == "dice_ce"  # the recipe's values reached train.py
    kept = Path(q["results"][0]["checkpoint"])  # the run folder outlived the bench's temp dir
    assert kept == Path(r.args[r.args.index("--out") + 1]) / "checkpoints" / "recipe-fp32"
    assert (kept / "model.safetensors").is_file() and (kept / "meta.json").is_file()


def test_table_lists_every_class_for_both_arms(quality):
    r, _ = quality
    table = r.stdout[r.stdout.index("IoU per class"):]
    for label in [*CLASS_KEYS, "mIoU", "pixel acc", "valid mIoU", "seconds"]:
        row = next(line for line in table.splitlines()[2:] if line.split()[:len(label.split())] == label.split())
        assert len(row.split()) - len(label.split()) == 2, row


def test_test_images_are_required_once(tmp_path):
    r = subprocess.run([sys.executable, "bench/quality.py", "--data", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--test-images" in r.stderr


def test_a_folder_that_is_not_a_dataset_is_refused_before_training(tiny_dataset, tmp_path):
    for data, test in [(tmp_path, tiny_dataset), (tiny_dataset, tmp_path)]:
        r = subprocess.run([sys.executable, "bench/quality.py", "--data", str(data), "--test", str(test)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and f"{tmp_path}: no data_split.csv" in r.stderr and "Traceback" not in r.stderr
