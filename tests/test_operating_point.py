"""--img_size auto, --aspect auto, --crop auto (bddseg/operating_point.py) and annealed class weights
(schedule.AnnealClassWeights)."""
import json
import math
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from test_train import run

import train

from bddseg import config, operating_point
from bddseg.loaders import TensorLoader
from bddseg.losses import get_loss
from bddseg.cli import UserError
from bddseg.layout import image_aspect, read_split
from bddseg.operating_point import (MAX_HEIGHT, MIN_HEIGHT, MIN_STEPS, PROBE_STEPS, WARMUP_STEPS,
                                    AutoCrop, pick_crop, pick_height, probe_img_size, short_budget_note, time_train_step)
from bddseg.schedule import AnnealClassWeights


@pytest.mark.parametrize("step_s", [0.5, 1.26, 1.5, 3.0, 8.0])
def test_the_height_is_the_largest_that_buys_the_steps(step_s):
    budget = 21 * 60
    h = pick_height(step_s, 240, budget)
    steps_at = lambda h: budget / (step_s * (h / 240) ** 2)  # noqa: E731  (step time ~ pixels)
    assert h % 8 == 0 and MIN_HEIGHT <= h <= MAX_HEIGHT
    assert (steps_at(h) >= MIN_STEPS or h == MIN_HEIGHT) and (steps_at(h + 8) < MIN_STEPS or h == MAX_HEIGHT)
    assert pick_height(step_s / 4, 120, budget) == h  # the same speed per pixel, measured at half the height


def test_the_probe_times_steps_and_leaves_the_random_stream_alone():
    frame = lambda h: (h // 8, h // 4)  # noqa: E731  (30x60 at MAX_HEIGHT: a cheap probe)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    picked = probe_img_size(lambda: torch.nn.Conv2d(3, 7, 3, padding=1), frame, 2, 60, "cpu", nullcontext, False)
    assert torch.equal(torch.rand(3), expected)
    assert picked["size_probe_frame"] == list(frame(MAX_HEIGHT)) and picked["size_probe_step_s"] > 0
    assert picked["img_size_picked"] == pick_height(picked["size_probe_step_s"], MAX_HEIGHT, 60)


class ClockedStep(torch.nn.Conv2d):
    """A conv whose forward moves a fake clock on: `warmup_s` per untimed step, then `step_s` per step."""

    def __init__(self, warmup_s, step_s):
        super().__init__(3, 7, 3, padding=1)
        self.warmup_s, self.step_s, self.now, self.calls = warmup_s, step_s, 0.0, 0

    def forward(self, x):
        self.now += self.warmup_s if self.calls < WARMUP_STEPS else self.step_s
        self.calls += 1
        return super().forward(x)


@pytest.mark.parametrize("step_s, timed", [(20.0, 3), (6.0, 3), (3.5, 4), (2.5, 5), (1.0, PROBE_STEPS)])
def test_a_slow_step_is_timed_until_the_steps_add_up_to_the_bound(monkeypatch, step_s, timed):
    model = ClockedStep(warmup_s=100.0, step_s=step_s)  # slow warm-up steps must not count toward the bound
    monkeypatch.setattr(operating_point.time, "perf_counter", lambda: model.now)
    assert time_train_step(model, (8, 16), 2, "cpu", nullcontext, max_s=12.0) == step_s
    assert model.calls == WARMUP_STEPS + timed  # never fewer than 3 timed; 3.5 s: 4 (14 s); 2.5 s: 5; 1 s: all 6


class ShapeLog(torch.nn.Conv2d):
    """A conv that notes the (h, w) of every batch it is trained on."""

    def __init__(self):
        super().__init__(3, 7, 3, padding=1)
        self.frames = []

    def forward(self, x):
        self.frames.append(tuple(x.shape[-2:]))
        return super().forward(x)


@pytest.mark.parametrize("budget_s, heights", [(1e-3, [MIN_HEIGHT]), (600, [MIN_HEIGHT, MAX_HEIGHT])])
def test_the_large_frames_are_timed_only_when_the_budget_buys_the_steps_at_the_smallest(budget_s, heights):
    frame = lambda h: (h // 8, h // 4)  # noqa: E731
    model = ShapeLog()
    picked = probe_img_size(lambda: model, frame, 2, budget_s, "cpu", nullcontext, False)
    assert list(dict.fromkeys(model.frames)) == [frame(h) for h in heights]  # in this order, each height once
    assert picked["size_probe_frame"] == list(frame(heights[-1]))  # the step time that decided is recorded
    assert picked["img_size_picked"] == pick_height(picked["size_probe_step_s"], heights[-1], budget_s)


@pytest.mark.parametrize("s96, s240, budget, picked, frame_h, steps", [
    (1.0, 10.0, 999, MIN_HEIGHT, MIN_HEIGHT, 999),     # 999 steps at 96 px: 240 px never timed
    (1.0, 10.0, 1100, MIN_HEIGHT, MIN_HEIGHT, 1100),   # 240 px timed, scales to below 96: the 96 px figures report
    (1.0, 6.25, 10_000, 240, MAX_HEIGHT, 1600),        # 1,600 steps of 240 px
    (1.0, 6.25, 4100, 192, MAX_HEIGHT, 1025),          # 656 at 240 px: 192 px (1,025) is the largest buying 1,000
])
def test_the_pick_comes_from_the_timed_steps(monkeypatch, capsys, s96, s240, budget, picked, frame_h, steps):
    frame = lambda h: (h, 2 * h)  # noqa: E731
    timed = []
    monkeypatch.setattr(operating_point, "time_train_step",
                        lambda model, f, *a: timed.append(f) or {frame(MIN_HEIGHT): s96, frame(MAX_HEIGHT): s240}[f])
    p = probe_img_size(lambda: None, frame, 8, budget, "cpu", nullcontext, False)
    assert (p["img_size_picked"], p["size_probe_frame"], p["size_probe_steps_in_budget"]) == \
        (picked, list(frame(frame_h)), steps)
    assert timed == [frame(MIN_HEIGHT)] + ([frame(MAX_HEIGHT)] if budget / s96 >= MIN_STEPS else [])
    assert ("note:" in capsys.readouterr().err) == (steps < MIN_STEPS)  # only a measured shortfall is noted


def test_a_budget_too_short_even_at_the_smallest_height_says_what_would_fit(capsys):
    frame = lambda h: (h // 8, h // 4)  # noqa: E731
    picked = probe_img_size(lambda: torch.nn.Conv2d(3, 7, 3, padding=1), frame, 2, 1e-3, "cpu", nullcontext, False)
    steps = picked["size_probe_steps_in_budget"]
    assert picked["img_size_picked"] == MIN_HEIGHT and steps < MIN_STEPS
    assert picked["size_probe_frame"] == list(frame(MIN_HEIGHT))  # timed at 96 px: no scaling
    err = capsys.readouterr().err
    assert f"buy about {steps} steps even at {MIN_HEIGHT} px" in err and f"buys {MIN_STEPS}" in err
    probe_img_size(lambda: torch.nn.Conv2d(3, 7, 3, padding=1), frame, 2, 600, "cpu", nullcontext, False)
    assert "note:" not in capsys.readouterr().err  # 10 minutes of a tiny conv: thousands of steps, nothing to say


def test_the_short_budget_note_gives_the_budget_that_buys_the_steps():
    note = short_budget_note(1 / 3, 150)  # 2.5 fp32 minutes at a third of a second per 96 px step
    assert "2.5 min buy about 450 steps even at 96 px" in note and f"--time_budget 6 buys {MIN_STEPS}" in note
    assert f"--time_budget 17 buys {MIN_STEPS}" in short_budget_note(1.0, 60)  # 1000 s: 16.7 minutes, rounded up


def test_image_aspect_is_the_most_common_shape(tiny_dataset, tmp_path):
    assert image_aspect(tiny_dataset) == pytest.approx(112 / 64)
    df = read_split(tiny_dataset, "train")
    (tmp_path / "images").mkdir()
    for i, name in enumerate(df.File_Name[:3]):
        Image.new("RGB", (40, 30) if i else (90, 30)).save(tmp_path / "images" / name)
    df[["File_Name", "Stage"]][:3].to_csv(tmp_path / "data_split.csv", index=False)
    assert image_aspect(tmp_path) == pytest.approx(4 / 3)
    with pytest.raises(UserError, match="no valid images"):
        image_aspect(tmp_path, "valid")
    (tmp_path / "images" / df.File_Name[1]).write_bytes(b"not an image")
    with pytest.raises(UserError, match=f"{df.File_Name[1]}: not a readable image"):
        image_aspect(tmp_path)


def test_whole_frames_when_the_budget_buys_enough_steps():
    assert pick_crop(180, step_s=1.2, budget_s=21 * 60) == 0  # 1050 steps: the bf16 CPU's operating point
    assert pick_crop(180, step_s=21 * 60 / MIN_STEPS, budget_s=21 * 60) == 0


@pytest.mark.parametrize("step_s", [2.0, 3.3, 5.0])
def test_crops_bring_the_steps_up_to_the_minimum(step_s):
    budget = 21 * 60
    crop = pick_crop(180, step_s, budget)
    assert crop % 8 == 0 and 96 <= crop < 180
    steps_at = lambda h: budget / (step_s * (h / 180) ** 2)  # noqa: E731  (step time ~ pixels)
    assert steps_at(crop) >= MIN_STEPS > steps_at(crop + 8) or crop == 96
    assert crop == max(int(180 * math.sqrt(budget / step_s / MIN_STEPS)) // 8 * 8, 96)


def test_never_below_half_the_frame():
    assert pick_crop(180, step_s=60, budget_s=60) == 96  # ceil(90 / 8) * 8
    assert pick_crop(64, step_s=1, budget_s=1) == 32


def loader():
    x, y = torch.zeros(4, 3, 64, 112, dtype=torch.uint8), torch.zeros(4, 64, 112, dtype=torch.uint8)
    return TensorLoader(x, y, bs=2, shuffle=True)


@pytest.mark.parametrize("step_s,crop", [(0.5, 0), (3.3, 104)])
def test_the_pick_sets_the_train_loader_and_is_recorded(step_s, crop):
    recorded, train = {}, loader()
    cb = AutoCrop(180, 21 * 60, config.frame_size, recorded.update)
    cb.learn = SimpleNamespace(dls=SimpleNamespace(train=train))
    cb.choose(step_s)
    assert cb.picked == crop and recorded["crop_picked"] == crop and recorded["probe_step_s"] == step_s
    assert recorded["probe_steps_in_budget"] == round(21 * 60 / step_s)
    if crop:
        assert train.out_size == config.frame_size(crop) and train.augment is not None
        x, y = next(iter(train))
        assert x.shape[-2:] == y.shape[-2:] == config.frame_size(crop)
    else:
        assert train.out_size is None and train.augment is None


def test_class_weights_anneal_to_one():
    w0 = torch.tensor([0.5, 1.0, 4.0])
    loss = get_loss("dice_ce", w0.clone())
    learn = SimpleNamespace(loss_func=loss, pct_train=0.0, training=True)
    cb = AnnealClassWeights()
    cb.learn = learn
    cb.before_fit()
    for pct in (0.0, 0.5, 0.75):
        learn.pct_train = pct
        cb.before_batch()
        for w in (loss.weight, loss.ce.weight):  # Dice's weights and cross-entropy's
            assert torch.allclose(w, w0 ** (1 - pct))
    learn.training = False
    learn.pct_train = 0.9
    cb.before_batch()  # validation batches leave the weights alone
    assert torch.allclose(loss.weight, w0 ** 0.25)
    cb.after_fit()
    assert torch.equal(loss.ce.weight, torch.ones(3))


def test_train_py_picks_and_records_a_crop(tiny_dataset, tmp_path):
    r = run(["--img_size", "64", "--batch_size", "1", "--time_budget", "0.15", "--crop", "auto",
             "--class_weights", "sqrt_inv", "--weight_anneal", "True", "--pretrained", "False"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    assert "--crop auto:" in r.err
    d = r.runs[0]
    assert "-sqrt_inv-anneal-cropauto-tb0.15m-" in d.name
    c = json.loads((d / "config.json").read_text())
    assert c["crop"] == "auto" and c["probe_step_s"] > 0
    assert c["crop_picked"] == pick_crop(64, c["probe_step_s"], 0.15 * 60)  # 9 s buy far fewer than 1000 steps
    assert json.loads((d / "meta.json").read_text())["config"]["crop_picked"] == c["crop_picked"]


def test_train_py_picks_and_records_the_frame(tiny_dataset, tmp_path):
    r = run(["--img_size", "auto", "--aspect", "auto", "--batch_size", "1", "--time_budget", "0.05",
             "--pretrained", "False"], tmp_path, tiny_dataset)
    assert r.rc == 0, r.err[-3000:]
    assert "--img_size auto:" in r.err
    c = json.loads((r.runs[0] / "config.json").read_text())
    assert c["img_size"] == c["aspect"] == "auto" and c["aspect_picked"] == round(112 / 64, 4)
    assert c["size_probe_frame"] == list(config.frame_size(MIN_HEIGHT, 112 / 64))  # 3 s: too short for 240 px steps
    assert c["img_size_picked"] == MIN_HEIGHT == pick_height(c["size_probe_step_s"], MIN_HEIGHT, 0.05 * 60)
    assert c["frame_size"] == list(config.frame_size(c["img_size_picked"], 112 / 64))
    assert f"-img{c['img_size_picked']}autoxauto-" in r.runs[0].name
    assert json.loads((r.runs[0] / "meta.json").read_text())["frame_size"] == c["frame_size"]  # what eval reads


def test_crop_auto_needs_a_time_budget(capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--crop", "auto"])
    assert e.value.code == 2 and "--crop auto" in capsys.readouterr().err
    assert train.parse_args(["--crop", "AUTO", "--time_budget", "5"]).crop == "auto"
    assert train.parse_args(["--crop=96"]).crop == 96
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--img_size", "auto"])
    assert e.value.code == 2 and "--img_size auto" in capsys.readouterr().err
    a = train.parse_args(["--img_size", "Auto", "--aspect", "AUTO", "--time_budget", "5", "--crop", "auto"])
    assert (a.img_size, a.aspect, a.crop) == ("auto", "auto", "auto")
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--img_size", "auto", "--time_budget", "5", "--crop", "96"])  # would be timed on frames
    assert e.value.code == 2 and "does not combine with --crop 96" in capsys.readouterr().err
