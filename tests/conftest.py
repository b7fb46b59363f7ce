"""Shared fixtures: hermetic W&B (offline, temp dirs) and a tiny processed dataset made without the generator."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bddseg import config, layout

ROOT = config.ROOT

OUTPUT_DIRS = {"ARTIFACTS_DIR": "BDDSEG_ARTIFACTS", "MODELS_DIR": "BDDSEG_MODELS", "EVAL_DIR": "BDDSEG_EVAL",
               "SWEEPS_DIR": "BDDSEG_SWEEPS", "REPORTS_DIR": "BDDSEG_REPORTS"}


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path_factory, monkeypatch):
    """Every test: W&B offline into a temp dir, config's output folders under temp dirs, no API key or netrc visible,
    no network for pretrained weights (tests of the download rule serve them on loopback)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BDDSEG_OFFLINE", "1")  # pretrained weights: cache only, never a probe of a public host
    monkeypatch.delenv("BDDSEG_WEIGHTS_URL", raising=False)
    outputs = tmp_path_factory.mktemp("outputs")  # nothing a test does lands in the repo's output folders
    for attr, env in OUTPUT_DIRS.items():
        monkeypatch.setattr(config, attr, outputs / attr.lower())
        monkeypatch.setenv(env, str(outputs / attr.lower()))
    yield
    if "wandb" in sys.modules:  # wandb's process-wide singleton caches settings (WANDB_DIR): reset it per test
        sys.modules["wandb"].teardown()


def make_tiny_dataset(root, n=12, size=(64, 112), seed=0, videos=6):
    """Write a processed dataset folder with n random-blob images (every class present somewhere) and a split."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / layout.IMAGES).mkdir(parents=True)
    (root / layout.LABELS).mkdir()
    h, w = size
    names = []
    for i in range(n):
        mask = np.zeros((h, w), np.uint8)
        mask[h // 2:, :] = 1  # road in the lower half
        for c in range(2, 7):
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            mask[y:y + rng.integers(4, 12), x:x + rng.integers(4, 12)] = c
        mask[0, :4] = 255  # a few ignore pixels
        palette = rng.integers(0, 255, (256, 3)).astype(np.uint8)
        img = palette[mask] // 2 + rng.integers(0, 128, (h, w, 3)).astype(np.uint8)
        name = f"vid{i % videos:02d}-{i:04d}.jpg"
        Image.fromarray(img).save(layout.image_path(root, name), quality=95)
        Image.fromarray(mask).save(layout.label_path(root, name))
        names.append(name)
    stages = ["train" if int(layout.video_of(f)[3:]) < videos - 2 else
              ("valid" if int(layout.video_of(f)[3:]) == videos - 2 else "test") for f in names]
    pd.DataFrame({"File_Name": names, "Stage": stages}).to_csv(root / layout.SPLIT_CSV, index=False)
    layout.write_manifest(root, name=root.name, type="split_data", source="tests")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny processed dataset (12 images 64x112, 6 videos: 8 train, 2 valid, 2 test)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny_split")
