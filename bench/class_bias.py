"""Per-class logit biases on a checkpoint: do class weights over-predict the rare classes, and does a bias fix it?

    python bench/class_bias.py --model RUN_DIR --data artifacts/camvid_ho            # valid chose nothing but this
    python bench/class_bias.py --model RUN_DIR --data artifacts/camvid_ho --tune     # + biases tuned on valid mIoU

A model trained with class weights w (e.g. sqrt_inv) learns scores tilted by log w towards the rare classes.
Variants, each scored on the valid and test stages at the masks' own resolution (logits upsampled bilinearly):
none; tau * -log(w) for tau 0.5 and 1 (undoing half or all of the weighting's tilt, no free choice made on data);
with --tune, biases fitted to valid mIoU by coordinate ascent (-3..3 per class in steps of 0.25, three rounds, every
2nd pixel). The valid stage is the one that may choose among them; the test rows only report. docs/results.md "Recipes".
"""
import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bddseg import device as dev
from bddseg.inference import load_model
from bddseg.layout import read_split
from bddseg.loaders import load_split
from bddseg.metrics import CLASS_KEYS, confusion, iou_from_confusion


def stage_logits(model, data, stage, size, precision) -> tuple:
    """([logits C x H x W float16 at its mask's size], [masks H x W]) of one stage, one pair per image."""
    images, _, _ = load_split(data, stage, size)
    logits, masks = [], []
    with torch.inference_mode():
        for i, label in enumerate(read_split(data, stage).label):
            x = images[i:i + 1].float().div(255).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(x).float()
            mask = torch.from_numpy(np.asarray(Image.open(label)).copy())
            logits.append(F.interpolate(out, size=mask.shape, mode="bilinear", align_corners=False)[0].half())
            masks.append(mask)
    return logits, masks


def scores(logits, masks, bias, step=1) -> dict:
    """IoU per class and mIoU of argmax(logits + bias) over all images, on every `step`th pixel."""
    cm = 0
    for image_logits, mask in zip(logits, masks):
        pred = (image_logits[:, ::step, ::step].float() + bias.view(-1, 1, 1)).argmax(0)
        cm = cm + confusion(pred.flatten(), mask[::step, ::step].flatten())
    return iou_from_confusion(cm)


def tune(logits, masks, frozen) -> torch.Tensor:
    """Biases by coordinate ascent on mIoU over -3..3 (step 0.25), three rounds; frozen classes keep 0."""
    bias = torch.zeros(logits[0].shape[0])
    best = scores(logits, masks, bias, 2)["miou"]
    for _ in range(3):
        for c in [c for c in range(len(bias)) if c not in frozen]:
            for value in np.arange(-3, 3.01, 0.25):
                trial = bias.clone()
                trial[c] = float(value)
                score = scores(logits, masks, trial, 2)["miou"]
                if score > best + 1e-6:
                    best, bias = score, trial
    return bias


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a train.py run folder (trained with class weights)")
    p.add_argument("--data", required=True, help="processed dataset folder with valid and test stages")
    p.add_argument("--tune", action="store_true", help="also biases tuned on valid mIoU")
    args = p.parse_args(argv)
    dev.set_threads()
    model, meta = load_model(args.model, "cpu")
    config = meta["config"]
    if not config.get("class_weight_values"):
        sys.exit(f"error: {args.model}: trained without class weights (class_weight_values is empty)")
    size, precision = tuple(meta["frame_size"]), config["precision"]
    stages = {s: stage_logits(model, args.data, s, size, precision) for s in ("valid", "test")}
    log_w = torch.tensor(config["class_weight_values"]).log()
    variants = {"none": torch.zeros(len(log_w)), "-0.5 log w": -0.5 * log_w, "-log w": -log_w}
    if args.tune:
        variants["tuned on valid"] = tune(*stages["valid"], meta["model_info"].get("absent_classes", []))
    print(f"CPU: {dev.cpu_model()}; {args.model} ({precision}, frames {size[0]}x{size[1]}); IoU at the masks' size")
    print(f"{'variant':>15} {'stage':>6} " + " ".join(f"{k[:10]:>10}" for k in ["mIoU", *CLASS_KEYS]))
    for name, bias in variants.items():
        for stage, (logits, masks) in stages.items():
            s = scores(logits, masks, bias)
            print(f"{name:>15} {stage:>6} " + " ".join(f"{s[k]:10.3f}" for k in
                                                      ["miou", *(f"{c}_iou" for c in CLASS_KEYS)]))
        print(f"{'':>15} {'bias':>6} {'':>10} " + " ".join(f"{float(b):10.2f}" for b in bias))


if __name__ == "__main__":
    main()
