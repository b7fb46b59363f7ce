"""A checkpoint as a predictor: eval mode on the device, optional flip TTA, predictions at each mask's own resolution.

Logits are resized back to the mask bilinearly, then argmax: metrics never see a resized mask. The resize, argmax and
loss run batched on the model's device; nothing is read back to the host here. On the CPU the resize is done only
where it can change the argmax (`upsampled_argmax`); the loss is taken at the model's resolution (`image_loss`).
"""
import numpy as np
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
    """Yield (row indices, thumbnails, masks, predictions, loss sum) per batch and mask size: masks and predictions
    N x H x W uint8 tensors on the device at the masks' own resolution, the loss a 0-d device tensor."""
    channels_last = use_channels_last(device)
    with torch.inference_mode():
        for batch in progress_bar(loader, leave=False):
            if isinstance(batch, UserError):
                raise batch
            x, masks, thumbs, idx = batch
            xb = x.to(device, non_blocking=True).float().div_(255)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, mixed_precision):
                logits = tta_logits(model, xb, tta)
            logits = logits.float().contiguous(memory_format=torch.channels_last)  # argmax over C: 4x faster
            for group in same_size(masks):
                target = torch.stack([masks[j] for j in group]).to(device, non_blocking=True)
                pred, loss = score(logits[group], target)
                yield [idx[j] for j in group], [thumbs[j] for j in group], target, pred, loss


def same_size(masks) -> list:
    """Positions of the masks grouped by size, in order (one group when all masks have one size)."""
    groups = {}
    for j, m in enumerate(masks):
        groups.setdefault(tuple(m.shape), []).append(j)
    return list(groups.values())


def score(logits, target) -> tuple:
    """(argmax of the logits resized bilinearly to the masks' size as uint8, summed `image_loss` over the masks).

    CPU: `upsampled_argmax` (only class boundaries interpolated). Other devices (where finding the boundary pixels
    would wait for the device): the full resize, one image at a time. The loss is taken at the model's resolution
    on every device, so `<split>_loss` compares across machines.
    """
    preds, loss = [], 0.0
    for lg, t in zip(logits, target):
        if lg.device.type == "cpu" and len(lg) < CODE_NONE:
            preds.append(upsampled_argmax(lg, tuple(t.shape)))
        else:
            up = F.interpolate(lg[None], size=tuple(t.shape), mode="bilinear", align_corners=False)[0]
            preds.append(up.argmax(0).to(torch.uint8))
        loss = loss + image_loss(lg, t)
    return torch.stack(preds), loss


# ------------------------------------------------------------------ argmax of bilinearly upsampled logits, CPU
CODE_NONE = 255  # "the 2x2 source pixels disagree": such output pixels are interpolated
MAX_BOUNDARY = 0.15  # share of output pixels to interpolate one by one, above which the whole resize is cheaper


def source_index(n_in: int, n_out: int) -> tuple:
    """(i0, i1, lambda0, lambda1) per output index: torch's bilinear source pixels and weights (align_corners=False,
    float32 as its CPU kernel computes them)."""
    scale = torch.tensor(float(n_in), dtype=torch.float32) / n_out
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.long()
    lam1 = src - i0
    return i0, (i0 + 1).clamp_(max=n_in - 1), 1 - lam1, lam1


def block_codes(low) -> torch.Tensor:
    """Per source pixel (i, j): its label where the 2x2 block (i..i+1, j..j+1, clamped at the edge) agrees, else
    CODE_NONE."""
    down = torch.cat([low[1:], low[-1:]])
    right, diag = (torch.cat([m[:, 1:], m[:, -1:]], 1) for m in (low, down))
    return torch.where((low == down) & (low == right) & (low == diag), low, CODE_NONE)


def upsampled_argmax(lg, size) -> torch.Tensor:
    """`F.interpolate(lg[None], size, mode="bilinear").argmax(1)[0]` as uint8, without resizing the C channels.

    A bilinear output pixel is a convex combination of its 2x2 source pixels, the same weights for every class: where
    the four share one argmax, the combination has that argmax too. So the low-resolution argmax, sampled at each
    output pixel's top-left source, is the answer wherever its 2x2 block agrees; only the output pixels of blocks
    that disagree (class boundaries, a few percent) are interpolated over the C classes. The same labels as torch's
    resize up to float rounding: a pixel whose two best classes tie to the last bit may differ.
    """
    (h, w), (H, W) = lg.shape[1:], size
    low = lg.argmax(0).to(torch.uint8)
    if (h, w) == (H, W):
        return low
    y0, y1, wy0, wy1 = source_index(h, H)
    x0, x1, wx0, wx1 = source_index(w, W)
    codes = block_codes(low)
    ys, xs = output_pixels(codes == CODE_NONE, y0, x0, MAX_BOUNDARY * H * W)
    if ys is None:  # noisy logits (an untrained model): the whole resize is cheaper
        return F.interpolate(lg[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8)
    out = torch.from_numpy(np.take(np.take(low.numpy(), y0.numpy(), 0), x0.numpy(), 1))  # 8x faster than index_select
    if len(ys):
        flat = lg.permute(1, 2, 0).reshape(h * w, -1)  # pixel-major (free for channels_last logits)
        r0, r1, c0, c1 = y0[ys] * w, y1[ys] * w, x0[xs], x1[xs]
        a, b = wx0[xs, None], wx1[xs, None]
        v = (flat[r0 + c0] * a + flat[r0 + c1] * b) * wy0[ys, None] + \
            (flat[r1 + c0] * a + flat[r1 + c1] * b) * wy1[ys, None]
        out[ys, xs] = v.argmax(1).to(torch.uint8)
    return out


def output_pixels(cells, y0, x0, limit) -> tuple:
    """(ys, xs) of the output pixels whose top-left source pixel (y0[ys], x0[xs]) is one of `cells` (h x w bool), found
    from the source side (y0, x0 never decrease: each source row and column owns a run of output rows and columns);
    (None, None) when there are more than `limit` of them."""
    ny, nx = torch.bincount(y0, minlength=cells.shape[0]), torch.bincount(x0, minlength=cells.shape[1])
    ci, cj = cells.nonzero(as_tuple=True)
    per = ny[ci] * nx[cj]  # output pixels of each cell
    if int(per.sum()) > limit:
        return None, None
    k = torch.repeat_interleave(per)  # the cell of each output pixel
    local = torch.arange(len(k)) - (per.cumsum(0) - per)[k]
    width = nx[cj[k]]
    return (ny.cumsum(0) - ny)[ci[k]] + local // width, (nx.cumsum(0) - nx)[cj[k]] + local % width


def nearest_index(n_in: int, n_out: int, device) -> torch.Tensor:
    """Source index per output index of F.interpolate(mode="nearest") (float32 scale, as torch computes it): the
    mask sampled without converting all its pixels to float; made on the device (a copy there would wait for it)."""
    scale = float(np.float32(n_in) / np.float32(n_out))  # exact in float32: the product is torch's
    return (torch.arange(n_out, dtype=torch.float32, device=device) * scale).long().clamp_(max=n_in - 1)


def image_loss(lg, t) -> torch.Tensor:
    """Summed cross-entropy of one image: the mean over the model's output pixels (the mask sampled nearest to that
    size), times the mask's scored pixels, so that the split's loss stays a mean over mask pixels (exactly the full-
    resolution cross-entropy when the sizes match)."""
    if t.shape == lg.shape[1:]:
        return F.cross_entropy(lg[None], t[None].long(), ignore_index=config.IGNORE, reduction="sum")
    (h, w), (H, W) = lg.shape[1:], t.shape
    small = t.index_select(0, nearest_index(H, h, t.device)).index_select(1, nearest_index(W, w, t.device)).long()
    mean = F.cross_entropy(lg[None], small[None], ignore_index=config.IGNORE)
    scored = torch.count_nonzero(t != config.IGNORE)  # 2x faster than .sum() on the CPU
    return torch.nan_to_num(mean) * scored  # nan: no scored pixel at the model's resolution
