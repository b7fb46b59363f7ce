"""The operating point of a time-budgeted run, picked from this machine's measured step time: `--img_size auto`
(frame height, timed before the data is decoded) and `--crop auto` (crops, timed on the run's first steps).

`--img_size auto`: `probe_img_size` times training steps (forward, loss, backward, AdamW) of a fresh model on random
batches of MIN_HEIGHT-high frames, then, when the budget buys `MIN_STEPS` of those, of MAX_HEIGHT-high ones, in the
run's precision; `pick_height` takes the largest height (multiple of 8, MIN_HEIGHT..MAX_HEIGHT) whose step, scaled
by pixels, gets `MIN_STEPS` into the budget: a fast bf16 CPU gets up to 240 px frames, a slower or fp32 one smaller
ones (README "Recipes"). The probe runs before the clock starts, like the decode, and takes 9 steps per height
(12-13 s in bf16 and 22 s in fp32 at 240x320 for resnet10t on a 2-core Zen 4 EPYC), 6-8 where a step takes over
2.4 s (`PROBE_MAX_S`). A short budget on a slow CPU (the demo's 4 minutes without bf16) stops after the 96 px steps.

`--crop auto`: a budget buys a number of optimizer steps, and a slow machine (a CPU without bf16: 2-5x slower per
step) buys too few on whole frames for a U-Net trained from scratch. `AutoCrop` times the run's first training steps
on whole frames; when the budget at that pace buys fewer than `MIN_STEPS`, it switches the train loader to
random crops whose pixel count brings the step count up to `MIN_STEPS` (a step's cost is about linear in
pixels), heights in multiples of 8, never below `MIN_SHARE` of the frame height. The choice is one line of
output and goes into the run's config (`crop_picked`, `probe_step_s`, `probe_steps_in_budget`). Measured on
CamVid with an AVX2 CPU (docs/results.md "Recipes"): the picked crops scored below whole frames, so the `person` recipe
does not use it.
"""
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback

from bddseg.loaders import Augment
from bddseg.schedule import TimeBudget

MIN_STEPS = 1000  # what 21 minutes buy at whole 180x320 frames on a bf16 CPU (27 epochs of 45 steps: about 1,200)
MIN_HEIGHT, MAX_HEIGHT = 96, 240  # --img_size auto picks a frame height in this range
MIN_SHARE = 0.5  # crops no smaller than half the frame height (a quarter of its pixels)
WARMUP_STEPS, PROBE_STEPS = 3, 6  # the median of 6 training steps after 3 untimed ones (oneDNN set-up,
# allocations); on a 2-core Zen 4 EPYC single bf16 steps at 240x320 ranged 1.25-1.9 s. AutoCrop times all 9: its
# steps train the run's model inside the budget.
MIN_PROBE_STEPS, PROBE_MAX_S = 3, 12.0  # --img_size auto stops timing after 3-5 steps once they add up to 12 s: an
# AVX2 EPYC in fp32 took 5.0 s per 240x320 step (CamVid, 21 minutes): 51 s of wall time for 9 steps, 35 s now


def pick_crop(img_size: int, step_s: float, budget_s: float, min_steps=MIN_STEPS, min_share=MIN_SHARE) -> int:
    """Crop height (0 = whole frames) so that a step of `step_s` on whole frames gets `min_steps` into the budget."""
    steps = budget_s / step_s
    if steps >= min_steps:
        return 0
    height = int(img_size * math.sqrt(steps / min_steps)) // 8 * 8  # pixels (and step time) go with height squared
    return max(height, math.ceil(min_share * img_size / 8) * 8)


def pick_height(step_s: float, probe_height: int, budget_s: float, min_steps=MIN_STEPS) -> int:
    """Frame height for `--img_size auto`: the largest multiple of 8 up to MAX_HEIGHT whose step (pixels times
    `step_s`, measured at `probe_height`) gets `min_steps` into the budget; never below MIN_HEIGHT."""
    height = probe_height * math.sqrt(budget_s / max(step_s, 1e-6) / min_steps)  # step time ~ pixels: height squared
    return int(min(max(height, MIN_HEIGHT), MAX_HEIGHT)) // 8 * 8


def short_budget_note(step_s: float, budget_s: float) -> str:
    """What a budget too short for MIN_STEPS even at MIN_HEIGHT (`step_s` per step there) means for rare classes,
    with the budget that buys them."""
    steps, need = round(budget_s / step_s), math.ceil(MIN_STEPS * step_s / 60)
    return (f"note: {budget_s / 60:g} min buy about {steps} steps even at {MIN_HEIGHT} px, fewer than the {MIN_STEPS} "
            f"this sizing aims for: from random init, rare classes (person) may stay at IoU 0 (on the synthetic data "
            f"person first showed after about 500 steps of 96 px frames: README, the demo); --time_budget {need} buys "
            f"{MIN_STEPS}")


def time_train_step(model, frame, batch_size: int, device, autocast, channels_last=False, max_s=PROBE_MAX_S) -> float:
    """Median seconds of a training step of `model` on random batches of `frame` (h, w): forward under `autocast`,
    cross-entropy, backward, fused AdamW (the run's optimizer kernel); the first WARMUP_STEPS are not timed, and
    timing ends after PROBE_STEPS, or earlier (never before MIN_PROBE_STEPS) once the timed steps add up to `max_s`."""
    model = model.to(device).train()
    x = torch.randn(batch_size, 3, *frame, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    times = []
    for _ in range(WARMUP_STEPS + PROBE_STEPS):
        t0 = time.perf_counter()
        with autocast():
            out = model(x)
        loss = F.cross_entropy(out.float(), torch.randint(0, out.shape[1], (batch_size, *frame), device=device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        timed = times[WARMUP_STEPS:]
        if len(timed) >= MIN_PROBE_STEPS and sum(timed) >= max_s:
            break
    return statistics.median(timed)


def probe_img_size(make_model, frame_size, batch_size: int, budget_s: float, device, autocast, channels_last) -> dict:
    """`--img_size auto`: time a model from `make_model()` at MIN_HEIGHT frames (`frame_size(height)` -> (h, w)); when
    the budget buys MIN_STEPS there, time it at MAX_HEIGHT too and pick the height from that (step time ~ pixels is
    closest near the top of the range); when either says MIN_HEIGHT, MIN_HEIGHT it is, reported from its own timing.
    Returns the pick and the figures behind it for the run's config (`img_size_picked`, `size_probe_frame`: the
    frame of the step time reported, ...)."""
    t0 = time.perf_counter()
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the run's seeded random streams stay as they would be without it
        model, probe_height = make_model(), MIN_HEIGHT
        step_s = max(time_train_step(model, frame_size(MIN_HEIGHT), batch_size, device, autocast, channels_last), 1e-6)
        if budget_s / step_s >= MIN_STEPS:  # a short budget on a slow CPU (the demo) skips 240 px steps
            high_s = time_train_step(model, frame_size(MAX_HEIGHT), batch_size, device, autocast, channels_last)
            if pick_height(high_s, MAX_HEIGHT, budget_s) > MIN_HEIGHT:  # else the 96 px figures, measured, report
                step_s, probe_height = high_s, MAX_HEIGHT
    height = pick_height(step_s, MAX_HEIGHT, budget_s) if probe_height == MAX_HEIGHT else MIN_HEIGHT
    steps = round(budget_s / step_s * (probe_height / height) ** 2)
    (ph, pw), (h, w) = frame_size(probe_height), frame_size(height)
    print(f"--img_size auto: {step_s:.2f} s per step at {ph}x{pw} -> frames of {h}x{w}, about {steps} steps in the "
          f"budget (probe {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if steps < MIN_STEPS:
        print(short_budget_note(step_s * (height / probe_height) ** 2, budget_s), file=sys.stderr)
    return {"img_size_picked": height, "size_probe_step_s": round(step_s, 4), "size_probe_frame": [ph, pw],
            "size_probe_steps_in_budget": steps}


class AutoCrop(Callback):
    """Time training steps on whole frames, then set the train loader's crop (see the module doc).

    Each step is timed from before_batch to after_batch (forward, loss, backward, optimizer step), so validation
    passes and checkpoint writes between epochs never count."""
    order = TimeBudget.order + 1

    def __init__(self, img_size: int, budget_s: float, frame_size, record=None):
        self.img_size, self.budget_s, self.frame_size, self.record = img_size, budget_s, frame_size, record
        self.picked, self.times = None, []

    def sync(self):
        if self.dls.train.device.type == "cuda":
            torch.cuda.synchronize()  # only while probing: the steps' real duration, not their launch time

    def before_batch(self):
        if self.training and self.picked is None:
            self.sync()
            self.t0 = time.perf_counter()

    def after_batch(self):
        if not self.training or self.picked is not None:
            return
        self.sync()
        self.times.append(time.perf_counter() - self.t0)
        if len(self.times) == WARMUP_STEPS + PROBE_STEPS:
            self.choose(statistics.median(self.times[WARMUP_STEPS:]))

    def choose(self, step_s: float):
        """Set the crop for the rest of the run and record why."""
        self.picked = pick_crop(self.img_size, step_s, self.budget_s)
        loader = self.dls.train
        if self.picked:
            loader.out_size = self.frame_size(self.picked)
            loader.augment = loader.augment or Augment(False, 1.0, 0, 0)
        steps = round(self.budget_s / step_s)
        print(f"--crop auto: {step_s:.2f} s per whole-frame step, {steps} steps in the budget -> "
              + (f"crops of {loader.out_size[0]}x{loader.out_size[1]}" if self.picked else "whole frames"),
              file=sys.stderr)
        if self.record:
            self.record({"crop_picked": self.picked, "probe_step_s": round(step_s, 4), "probe_steps_in_budget": steps})
