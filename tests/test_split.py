"""Grouped, stratified split: no video in two stages, fractions close to asked, stages non-empty, deterministic."""
import numpy as np
import pandas as pd
import pytest

import params
from bddseg import sources, split
from bddseg.layout import STAGES, video_of
from bddseg.cli import UserError


def make_eda(videos=60, frames=4, seed=0, bicycle_videos=12):
    """An eda-like table: `videos` groups; bicycles in whole videos (rare), persons in random frames."""
    rng = np.random.default_rng(seed)
    rows = []
    bike = set(rng.choice(videos, bicycle_videos, replace=False).tolist())
    for v in range(videos):
        for f in range(int(rng.integers(1, frames + 1))):
            row = {"File_Name": f"v{v:03d}-{f:04d}.jpg", "video": f"v{v:03d}"}
            for c, name in params.BDD_CLASSES.items():
                row[f"{params.class_key(name)}_present"] = int(c in (0, 1, 5) or (c == 4 and rng.random() < 0.5))
            row["bicycle_present"] = int(v in bike)
            rows.append(row)
    return pd.DataFrame(rows)


def test_groups_never_span_stages_and_fractions_hold():
    eda = make_eda()
    out = split.split(eda, seed=1)
    assert list(out.File_Name) == list(eda.File_Name)
    stage_of_video = eda.assign(Stage=out.Stage).groupby("video").Stage.nunique()
    assert (stage_of_video == 1).all()
    share = out.Stage.value_counts(normalize=True)
    assert set(share.index) == set(STAGES)
    assert abs(share["train"] - 0.8) < 0.08 and abs(share["valid"] - 0.1) < 0.06 and abs(share["test"] - 0.1) < 0.06


def test_stratified_on_the_rarest_class():
    eda = make_eda()
    out = split.split(eda, seed=1)
    assert out.attrs["stratify"] == "bicycle"
    stats = split.describe(eda, out)
    assert (stats.bicycle > 0).all()  # 12 bicycle videos reach every stage


def test_deterministic_and_seeded():
    eda = make_eda()
    a, b, c = split.split(eda, seed=5), split.split(eda, seed=5), split.split(eda, seed=6)
    assert a.equals(b)
    assert not a.Stage.equals(c.Stage)


@pytest.mark.parametrize("frames,seed", [(1, 0), (1, 1), (1, 2), (4, 0)])
def test_three_videos_is_the_minimum(frames, seed):
    eda = make_eda(videos=3, frames=frames, seed=seed, bicycle_videos=1)
    out = split.split(eda, seed=seed)
    assert sorted(out.Stage.unique()) == sorted(STAGES)
    with pytest.raises(UserError, match="at least 3"):
        split.split(make_eda(videos=2, bicycle_videos=1))


def test_other_fractions_and_bad_fractions():
    eda = make_eda(videos=80)
    for fractions in [(0.6, 0.2, 0.2), (0.2, 0.2, 0.6), (0.7, 0.15, 0.15)]:
        share = split.split(eda, fractions=fractions).Stage.value_counts(normalize=True)
        assert all(abs(share[s] - f) < 0.07 for s, f in zip(STAGES, fractions)), (fractions, share.to_dict())
    for bad in [(0.8, 0.2, 0.0), (0.5, 0.1, 0.1), (1.0, 0.0)]:
        with pytest.raises(UserError, match="fractions"):
            split.split(eda, fractions=bad)
    with pytest.raises(UserError, match="unknown class"):
        split.split(eda, stratify="pedestrian")


def test_fold_plan():
    assert split.fold_plan(0.1, 20) == (10, 1) and split.fold_plan(0.6, 20) == (5, 3)
    assert split.fold_plan(0.1 / 0.9, 20) == (9, 1) and split.fold_plan(0.1, 3) == (3, 1)


def test_video_groups_of_file_names():
    assert sources.video_id("s0001-0003") == "s0001"
    assert sources.video_id("vid03-0007") == video_of("vid03-0007.jpg") == "vid03"  # conftest names
    assert sources.video_id("0004a4c0-d4dff0ad") == "0004a4c0"                      # BDD100K
    assert sources.video_id("0001TP_006690", "_") == "0001TP"                       # CamVid sequence
    assert sources.video_id("0016E5_07959", "_", clip=300) == "0016E5@26"           # 10 s clips at 30 fps
    assert sources.video_id("0006R0_f00930", "_", clip=300) == "0006R0@3"
    assert sources.video_id("plain") == "plain"
