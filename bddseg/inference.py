"""A checkpoint as a predictor: eval mode on the device, optional flip TTA, predictions at each mask's own resolution.

Logits are resized back to the mask bilinearly, then argmax: metrics never see a resized mask.
"""
import torch
import torch.nn.functional as F
from fastprogress.fastprogress import progress_bar

from bddseg import config
from bddseg.checkpoint import load_checkpoint
from bddseg.cli import UserError
from bddseg.device import autocast_context, use_channels_last


def load_model(folder, device):
    """(model in eval mode on device, meta): rebuilt from the checkpoint's meta.json alone."""
    model, meta = load_checkpoint(folder, device=device)
    model.eval()
    if use_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model, meta


def tta_logits(model, x, tta=False):
    """Logits N x C x H x W; with tta, averaged with the logits of the horizontally flipped batch."""
    logits = model(x)
    if tta:
        logits = (logits + model(x.flip(-1)).flip(-1)) / 2
    return logits


def predict(model, loader, device, tta=False, mixed_precision=True):
    """Yield (row index, thumbnail HxWx3 uint8, mask, prediction, loss sum) per image, at the mask's resolution."""
    channels_last = use_channels_last(device)
    with torch.inference_mode():
        for batch in progress_bar(loader, leave=False):
            if isinstance(batch, UserError):
                raise batch
            x, masks, thumbs, idx = batch
            xb = x.to(device).float().div_(255)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, mixed_precision):
                logits = tta_logits(model, xb, tta)
            logits = logits.float().contiguous(memory_format=torch.channels_last)  # argmax over C: 4x faster
            for j, (mask, thumb, i) in enumerate(zip(masks, thumbs, idx)):
                target = mask.to(device).long()
                up = F.interpolate(logits[j:j + 1], size=tuple(target.shape), mode="bilinear", align_corners=False)
                loss = F.cross_entropy(up, target[None], ignore_index=config.IGNORE, reduction="sum").item()
                yield i, thumb, mask.numpy(), up.argmax(1)[0].cpu().numpy(), loss
