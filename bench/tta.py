"""Test-time variants of a checkpoint: mirrored input and larger frames, alone and averaged (multi-scale).

    python bench/tta.py --model RUN_DIR --data artifacts/camvid_ho      # valid chooses, test only reports

Each variant runs the model on its inputs (frame scale, mirrored or not), upsamples every output's logits bilinearly
to the mask's own size and averages them before the argmax; IoU per class and mIoU on the valid and test stages,
one image at a time (held: the stage's uint8 frames at each input size, no logits). "as trained" is eval.py's plain
score, "flip" its --tta. docs/results.md "Recipes".
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bddseg import device as dev
from bddseg.inference import load_model
from bddseg.layout import read_split
from bddseg.loaders import load_split
from bddseg.metrics import CLASS_KEYS, confusion, iou_from_confusion

VARIANTS = {"as trained": [(1, False)], "flip": [(1, False), (1, True)], "x1.25": [(1.25, False)],
            "x1.5": [(1.5, False)], "x1 + x1.5": [(1, False), (1.5, False)],
            "x1 + x1.5, flip": [(1, False), (1, True), (1.5, False), (1.5, True)]}


def scaled(size, k) -> tuple:
    """(h, w) times k, rounded to even numbers."""
    return tuple(int(round(v * k / 2)) * 2 for v in size)


def logits(model, x, mirrored, mask_size, precision) -> torch.Tensor:
    """C x H x W float32 logits of one image (1 x 3 x h x w in [0, 1]) at the mask's size; mirrored: of the mirrored
    image, mirrored back."""
    x = (x.flip(-1) if mirrored else x).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x).float()
    out = F.interpolate(out, size=mask_size, mode="bilinear", align_corners=False)[0]
    return out.flip(-1) if mirrored else out


def stage_scores(model, data, stage, size, precision) -> dict:
    """{variant: IoU per class and mIoU} over one stage, every input of an image computed once."""
    inputs = sorted({i for v in VARIANTS.values() for i in v})
    images = {k: load_split(data, stage, scaled(size, k))[0] for k in {k for k, _ in inputs}}
    cms = dict.fromkeys(VARIANTS, 0)
    for n, label in enumerate(read_split(data, stage).label):
        mask = torch.from_numpy(np.asarray(Image.open(label)).copy())
        outs = {(k, m): logits(model, images[k][n:n + 1].float().div(255), m, mask.shape, precision)
                for k, m in inputs}
        for name, variant in VARIANTS.items():
            pred = sum(outs[i] for i in variant).argmax(0)
            cms[name] = cms[name] + confusion(pred.flatten(), mask.flatten())
    return {name: iou_from_confusion(cm) for name, cm in cms.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a train.py run folder")
    p.add_argument("--data", required=True, help="processed dataset folder with valid and test stages")
    args = p.parse_args(argv)
    dev.set_threads()
    model, meta = load_model(args.model, "cpu")
    size, precision = tuple(meta["frame_size"]), meta["config"]["precision"]
    stages = {s: stage_scores(model, args.data, s, size, precision) for s in ("valid", "test")}
    print(f"CPU: {dev.cpu_model()}; {args.model} ({precision}, frames {size[0]}x{size[1]}); IoU at the masks' size")
    print(f"{'variant':>16} {'stage':>6} " + " ".join(f"{k[:10]:>10}" for k in ["mIoU", *CLASS_KEYS]))
    for name in VARIANTS:
        for stage, rows in stages.items():
            s = rows[name]
            print(f"{name:>16} {stage:>6} " + " ".join(f"{s[k]:10.3f}" for k in
                                                       ["miou", *(f"{c}_iou" for c in CLASS_KEYS)]))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
