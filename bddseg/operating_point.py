"""`--crop auto`: the crop size of a time-budgeted run, picked from this machine's measured step time.

A budget buys a number of optimizer steps, and a slow machine (a CPU without bf16: 2-5x slower per step) buys
too few on whole frames for a U-Net trained from scratch. `AutoCrop` times the run's first training steps
on whole frames; when the budget at that pace buys fewer than `MIN_STEPS`, it switches the train loader to
random crops whose pixel count brings the step count up to `MIN_STEPS` (a step's cost is about linear in
pixels), heights in multiples of 8, never below `MIN_SHARE` of the frame height. The choice is one line of
output and goes into the run's config (`crop_picked`, `probe_step_s`, `probe_steps_in_budget`). Measured on
CamVid with an AVX2 CPU (README "Recipes"): the picked crops scored below whole frames, so the `person` recipe
does not use it.
"""
import math
import statistics
import sys
import time

import torch
from fastai.callback.core import Callback

from bddseg.loaders import Augment
from bddseg.schedule import TimeBudget

MIN_STEPS = 1000  # what 21 minutes buy at whole 180x320 frames on a bf16 CPU (27 epochs of 45 steps: about 1,200)
MIN_SHARE = 0.5  # crops no smaller than half the frame height (a quarter of its pixels)
WARMUP_STEPS, PROBE_STEPS = 3, 4  # the median of 4 training steps after 3 untimed ones (oneDNN set-up, allocations)


def pick_crop(img_size: int, step_s: float, budget_s: float, min_steps=MIN_STEPS, min_share=MIN_SHARE) -> int:
    """Crop height (0 = whole frames) so that a step of `step_s` on whole frames gets `min_steps` into the budget."""
    steps = budget_s / step_s
    if steps >= min_steps:
        return 0
    height = int(img_size * math.sqrt(steps / min_steps)) // 8 * 8  # pixels (and step time) go with height squared
    return max(height, math.ceil(min_share * img_size / 8) * 8)


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
