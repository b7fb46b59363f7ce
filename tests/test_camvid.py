"""Real street scenes: import a handful of CamVid frames with the camvid presets (skips when the data is absent)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import params
from bddseg import layout
from data import prepare  # data/ as a namespace package: pytest.ini's pythonpath is the repo
from bddseg.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared/data/camvid"
pytestmark = pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason=f"CamVid sample not found at {CAMVID}")

# CamVid ids -> our classes, as in shared/data/camvid/README.md (6 sign/symbol: ignored, or traffic sign)
EXPECTED = {0: 0, 1: 0, 2: 0, 3: 1, 4: 0, 5: 0, 6: 255, 7: 0, 8: 5, 9: 4, 10: 6, 11: 255}


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """Links to the first 4 frames of each CamVid training sequence (3 sequences = 3 videos)."""
    root = tmp_path_factory.mktemp("camvid")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for seq in ("0001TP", "0006R0", "0016E5"):
        for img in sorted((CAMVID / "train").glob(f"{seq}_*.jpg"))[:4]:
            (root / "images" / img.name).symlink_to(img)
            (root / "masks" / f"{img.stem}.png").symlink_to(CAMVID / "trainannot" / f"{img.stem}.png")
    return root


@pytest.mark.parametrize("preset,sign", [("camvid", 255), ("camvid-sign", 3)])
def test_camvid_import_maps_and_groups_by_sequence(subset, tmp_path, preset, sign):
    prepare.main(["--source", "folder", "--images", subset / "images", "--masks", subset / "masks",
                  "--mapping", preset, "--limit", 10, "--out", tmp_path, "--no-wandb", "--workers", 1])
    raw, proc = tmp_path / params.RAW_DATA_AT, tmp_path / params.PROCESSED_DATA_AT
    eda = pd.read_csv(raw / "eda.csv")
    assert len(eda) == 10 and sorted(eda.video.unique()) == ["0001TP", "0006R0", "0016E5"]
    table = {**EXPECTED, 6: sign}
    lut = np.array([table.get(i, 0) for i in range(256)], np.uint8)
    for name in eda.File_Name:
        src = np.asarray(Image.open(subset / "masks" / f"{Path(name).stem}.png"))
        got = np.asarray(Image.open(layout.label_path(raw, name)))
        assert got.shape == (360, 480) and np.array_equal(got, lut[src])
        assert (raw / "images" / name).read_bytes() == (subset / "images" / name).read_bytes()
    assert eda.road_present.all() and eda.vehicle_present.any() and eda.person_present.any()
    split = pd.read_csv(proc / "data_split.csv").merge(eda[["File_Name", "video"]])
    assert (split.groupby("video").Stage.nunique() == 1).all() and split.Stage.nunique() == 3


def test_camvid_clip_grouping(subset, tmp_path):
    prepare.main(["--source", "folder", "--images", subset / "images", "--masks", subset / "masks",
                  "--mapping", "camvid", "--clip", 60, "--out", tmp_path, "--no-wandb", "--workers", 1])
    videos = pd.read_csv(tmp_path / params.RAW_DATA_AT / "eda.csv").video
    assert videos.nunique() > 3 and all("@" in v for v in videos)


def test_camvid_given_split_trains_without_predicting_traffic_light(subset, tmp_path):
    """CamVid's own train/val folders kept as stages; no traffic-light pixels -> the model never predicts one."""
    val = tmp_path / "val"
    (val / "images").mkdir(parents=True)
    (val / "masks").mkdir()
    for img in sorted((CAMVID / "val").glob("*.jpg"))[:4]:
        (val / "images" / img.name).symlink_to(img)
        (val / "masks" / f"{img.stem}.png").symlink_to(CAMVID / "valannot" / f"{img.stem}.png")
    prepare.main(["--source", "folder", "--images", subset / "images", val / "images", "--masks", subset / "masks",
                  val / "masks", "--stages", "train,valid", "--mapping", "camvid-sign", "--clip", 300,
                  "--out", tmp_path / "a", "--no-wandb", "--workers", 1])
    data = tmp_path / "a" / params.PROCESSED_DATA_AT
    split = pd.read_csv(data / "data_split.csv")
    assert (split.Stage == "valid").sum() == 4 and (split.Stage == "train").sum() == 12
    args = ["--data", data, "--img_size", 64, "--batch_size", 4, "--epochs", 1, "--pretrained", "False",
            "--crop", 48, "--focus", 0.5, "--output", tmp_path / "m"]
    r = subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no traffic light pixels in the training masks" in r.stderr
    meta = json.loads(next((tmp_path / "m").glob("*/*/meta.json")).read_text())
    assert meta["model_info"]["absent_classes"] == [2]
    model, _ = load_checkpoint(next((tmp_path / "m").glob("*/*")))
    with torch.no_grad():
        assert not (model(torch.rand(2, 3, 64, 114)).argmax(1) == 2).any()
