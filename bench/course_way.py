"""The course project's training pipeline, the baseline the benches compare against.

fastai DataBlock reading and resizing the image files every epoch (squished to the frame, as the course's 16:9 BDD
frames were), `aug_transforms`, fp32, `unet_learner` (fastai's DynamicUnet) on a torchvision resnet18 from scratch
(no pretrained weights offline), plain cross-entropy, `fit_one_cycle` at 2e-3, batch 8.
"""

from bddseg import config
from bddseg.layout import read_split

LR, BATCH_SIZE, EPOCHS, IMG_SIZE = 2e-3, 8, 10, 96


def course_dls(data, size, bs=BATCH_SIZE):
    """fastai DataLoaders of a processed dataset's train/valid stages: files decoded and resized every epoch."""
    from fastai.vision.all import (ColReader, ColSplitter, DataBlock, ImageBlock, MaskBlock, Resize, ResizeMethod,
                                   aug_transforms)
    df = read_split(data, ["train", "valid"])
    df["is_valid"] = df.Stage == "valid"
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes=list(config.BDD_CLASSES.values()))),
                      get_x=ColReader("image"), get_y=ColReader("label"), splitter=ColSplitter(),
                      item_tfms=Resize(size, method=ResizeMethod.Squish), batch_tfms=aug_transforms())
    return block.dataloaders(df, bs=bs)


def course_learner(dls, metrics=(), cbs=()):
    """unet_learner on resnet18 from random init (fastai's DynamicUnet, no normalisation without pretraining)."""
    from fastai.vision.all import CrossEntropyLossFlat, unet_learner
    from torchvision.models import resnet18
    return unet_learner(dls, resnet18, pretrained=False, n_out=len(config.BDD_CLASSES), metrics=list(metrics),
                        loss_func=CrossEntropyLossFlat(axis=1, ignore_index=config.IGNORE), cbs=list(cbs))
