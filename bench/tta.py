"""Test-time variants of a checkpoint: mirrored input and larger frames, alone and averaged (multi-scale).

    python bench/tta.py --model RUN_DIR --data artifacts/camvid_ho      # valid chooses, test only reports

Each variant runs the model on the listed inputs (frame scale, mirrored or not), upsamples every output's logits
bilinearly to the mask's own size and averages them before the argmax; IoU per class and mIoU on the valid and test
stages. "as trained" is eval.py's plain score, "flip" its --tta. README "Recipes".
"""
import argparse

import torch
from class_bias import stage_logits

from bddseg import device as dev
from bddseg.inference import load_model
from bddseg.metrics import CLASS_KEYS, confusion, iou_from_confusion

VARIANTS = {"as trained": [(1, False)], "flip": [(1, True)], "x1.25": [(1.25, False)], "x1.5": [(1.5, False)],
            "x1 + x1.5": [(1, False), (1.5, False)], "x1 + x1.5, flip": [(1, True), (1.5, True)]}


def scaled(size, k) -> tuple:
    """(h, w) times k, rounded to even numbers."""
    return tuple(int(round(v * k / 2)) * 2 for v in size)


def variant_scores(outputs, masks) -> dict:
    """IoU per class and mIoU of the argmax of the summed logits (one list per input) over all images."""
    cm = 0
    for i, mask in enumerate(masks):
        cm = cm + confusion(sum(out[i].float() for out in outputs).argmax(0).flatten(), mask.flatten())
    return iou_from_confusion(cm)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a train.py run folder")
    p.add_argument("--data", required=True, help="processed dataset folder with valid and test stages")
    args = p.parse_args(argv)
    dev.set_threads()
    model, meta = load_model(args.model, "cpu")
    size, precision = tuple(meta["frame_size"]), meta["config"]["precision"]
    inputs = sorted({i for v in VARIANTS.values() for i in v})
    print(f"CPU: {dev.cpu_model()}; {args.model} ({precision}, frames {size[0]}x{size[1]}); IoU at the masks' size")
    print(f"{'variant':>16} {'stage':>6} " + " ".join(f"{k[:10]:>10}" for k in ["mIoU", *CLASS_KEYS]))
    rows = {}
    for stage in ("valid", "test"):
        outs = {i: stage_logits(model, args.data, stage, scaled(size, i[0]), precision, flip=i[1]) for i in inputs}
        masks = outs[inputs[0]][1]
        for name, variant in VARIANTS.items():
            rows[name, stage] = variant_scores([outs[i][0] for i in variant], masks)
        del outs
    for name in VARIANTS:
        for stage in ("valid", "test"):
            s = rows[name, stage]
            print(f"{name:>16} {stage:>6} " + " ".join(f"{s[k]:10.3f}" for k in
                                                       ["miou", *(f"{c}_iou" for c in CLASS_KEYS)]))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
