"""Encoder registry + a compact U-Net: a skip at every encoder resolution, normalisation inside the model.

`build_model("resnet18", 7)` or `build_model("timm/convnext_tiny", 7)` -> (model, info). The model takes float
NCHW images in [0, 1] of any size and returns logits of the same height and width.

Why not fastai's DynamicUnet: its middle conv doubles the encoder's last width, so resnet50 becomes a 339M-parameter
U-Net (resnet18: 31M); this decoder keeps a fixed width per resolution (resnet18: 14M, resnet50: 33M).
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bddseg import config
from bddseg.cli import UserError
from bddseg.weights import hf_hub_mode, hub_file, load_torch_hub_weights, loaded, say, torch_hub_file

TIMM_PREFIX = "timm/"
PROBE_PX = 128  # square probe image used to find an encoder's stages (every /32 stage stays >= 4 px)


# ---------------------------------------------------------------- encoders: image -> list of stage features
class Stages(nn.Module):
    """An encoder made of sequential stages; returns every stage's output (one per resolution)."""

    def __init__(self, stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


@torch.no_grad()
def split_stages(layers) -> Stages:
    """Group consecutive layers (in eval mode) by output resolution: each stage ends right before a downsampling."""
    x, groups, size = torch.zeros(1, 3, PROBE_PX, PROBE_PX), [], None
    for layer in layers:
        x = layer(x)
        if x.shape[-2:] != size:
            groups.append([])
            size = x.shape[-2:]
        groups[-1].append(layer)
    return Stages([nn.Sequential(*g) for g in groups])


def torchvision_encoder(name, body, pretrained):
    """A torchvision classifier cut into resolution stages; `body(model)` lists its feature layers in order."""
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    model = torchvision.models.get_model(name, weights=None)
    source = pretrained and load_torch_hub_weights(model, weights.url, f"torchvision {name}") or None
    tf = weights.transforms()
    return split_stages(body(model.eval())), tf.mean, tf.std, source


def timm_encoder(name, pretrained):
    """A timm model with features_only=True (one output per feature level) and its pretrained_cfg mean/std."""
    import timm
    from timm.models import get_pretrained_cfg
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r} (names as in timm.list_models(), e.g. timm/resnet18)")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # invalid pretrained tag
        raise UserError(f"timm model {name!r}: {e}") from None
    repo, url = (cfg.hf_hub_id, cfg.url) if cfg else (None, None)
    what = f"timm {name}"
    source = None
    if pretrained and repo:
        source = hf_hub_mode(repo, what)
    elif pretrained and url:  # a plain URL: fetched into torch hub's cache by the rule, where timm then finds it
        source = torch_hub_file(url, what)[1]
    elif pretrained:
        say("warning", f"timm {name} has no pretrained weights; training from random init")
    try:
        model = timm.create_model(name, features_only=True, pretrained=source is not None)
    except Exception as e:
        if source is None:
            raise UserError(f"timm model {name!r} cannot serve as a U-Net encoder: {e}") from None
        model = timm_encoder(name, False)[0]  # same build without weights (raises UserError if that fails too)
        say("warning", f"no pretrained weights for {what} ({type(e).__name__}: {str(e)[:200]}); training from "
                       f"random init")
        source = None
    if source:
        loaded(what, source, f"hub repo {repo}" if repo else hub_file(url))
    cfg = model.pretrained_cfg or {}
    return model, cfg.get("mean", config.IMAGENET_MEAN), cfg.get("std", config.IMAGENET_STD), source


def resnet(m):
    return [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]


def features(m):
    return list(m.features)


def features_no_head(m):
    return list(m.features)[:-1]  # drop the classifier's final 1x1 width expansion (1280/576/960 channels)


def regnet(m):
    return [m.stem, *m.trunk_output]


ARCHS = {name: partial(torchvision_encoder, name, body) for name, body in [
    ("resnet18", resnet), ("resnet34", resnet), ("resnet50", resnet), ("convnext_tiny", features),
    ("regnet_x_400mf", regnet), ("regnet_y_400mf", regnet),
    ("mobilenet_v3_small", features_no_head), ("mobilenet_v3_large", features_no_head),
    ("efficientnet_b0", features_no_head),
]}  # plus "timm/<any timm model name>" (get_encoder); other torchvision models of these families: one line each


def get_encoder(arch):
    """The encoder factory for a registry name or `timm/<name>`; UserError for anything else."""
    if arch in ARCHS:
        return ARCHS[arch]
    if arch.startswith(TIMM_PREFIX) and len(arch) > len(TIMM_PREFIX):
        return partial(timm_encoder, arch[len(TIMM_PREFIX):])
    raise UserError(f"unknown arch {arch!r}: use one of {', '.join(ARCHS)} or timm/<timm model name>")


@torch.no_grad()
def probe(encoder):
    """(channels, reductions) of the encoder's outputs for a PROBE_PX square image (eval mode: stats untouched)."""
    encoder.eval()
    feats = encoder(torch.zeros(1, 3, PROBE_PX, PROBE_PX))
    return [f.shape[1] for f in feats], [round(PROBE_PX / f.shape[-2]) for f in feats]


# ---------------------------------------------------------------- decoder
def conv_bn_relu(ni, nf):
    return nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))


DECODER_WIDTH = 16  # decoder channels at full size (fastai's U-Nets: 16); --decoder_width 8 halves every block


def decoder_width(reduction, width=DECODER_WIDTH):
    """Decoder channels at a resolution: `width` at full size, doubling per halving, at most 16x `width`."""
    return min(16 * width, width * reduction)


class UpBlock(nn.Module):
    """Upsample to the skip's size (any size, not only x2), concatenate the skip, two conv-bn-relu."""

    def __init__(self, ni, skip_c, nf):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(ni + skip_c, nf), conv_bn_relu(nf, nf))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.convs(torch.cat([x, skip.to(x.dtype)], 1))


ABSENT_LOGIT = -1e4  # added to the logits of classes the training data never shows: never predicted, no gradient


class Unet(nn.Module):
    """Normalise, encode, then one UpBlock per encoder resolution (deep to shallow) and one at full size with the
    input image as the last skip; a 1x1 conv gives the class logits. Classes in `absent` (none in the training
    masks, e.g. traffic light in CamVid) get ABSENT_LOGIT: a stray pixel of them would score IoU 0 on test data."""

    def __init__(self, encoder, channels, reductions, n_classes, mean, std, absent=(), width=DECODER_WIDTH):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        offset = torch.zeros(n_classes)
        offset[list(absent)] = ABSENT_LOGIT
        self.register_buffer("class_offset", offset.view(1, -1, 1, 1), persistent=False)  # meta.json keeps `absent`
        self.has_absent = bool(len(absent))
        self.encoder = encoder
        # one feature per resolution: the last of any run with the same reduction
        self.keep = [i for i, r in enumerate(reductions) if i + 1 == len(reductions) or reductions[i + 1] != r]
        chans, reds = [channels[i] for i in self.keep], [reductions[i] for i in self.keep]
        self.blocks, ni = nn.ModuleList(), chans[-1]
        for c, r in zip(chans[-2::-1], reds[-2::-1]):
            self.blocks.append(UpBlock(ni, c, decoder_width(r, width)))
            ni = decoder_width(r, width)
        self.final = UpBlock(ni, 3, width)
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, x):
        x = (x - self.mean) / self.std
        feats = self.encoder(x)
        feats = [feats[i] for i in self.keep]
        y = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1]):
            y = block(y, skip)
        logits = self.head(self.final(y, x))
        return logits + self.class_offset.to(logits.dtype) if self.has_absent else logits


def build_model(arch: str, n_classes: int, pretrained: bool = True, absent=(), width: int = DECODER_WIDTH):
    """U-Net for a registered encoder -> (model in train mode, info dict); `absent` classes are never predicted."""
    if int(n_classes) < 1:
        raise UserError(f"n_classes must be >= 1, got {n_classes}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise UserError(f"decoder width must be a whole number >= 1, got {width!r}")
    if any(not 0 <= int(c) < int(n_classes) for c in absent) or len(set(absent)) >= int(n_classes):
        raise UserError(f"absent classes {list(absent)}: need ids in 0..{int(n_classes) - 1}, not all of them")
    encoder, mean, std, source = get_encoder(arch)(pretrained)
    try:
        channels, reductions = probe(encoder)
    except Exception as e:
        raise UserError(f"arch {arch!r}: the encoder cannot run on a {PROBE_PX}px image ({e})") from None
    model = Unet(encoder, channels, reductions, int(n_classes), mean, std, absent, width).train()
    info = dict(arch=arch, mean=[float(v) for v in mean], std=[float(v) for v in std],
                pretrained_loaded=source is not None, pretrained_source=source,
                absent_classes=sorted(int(c) for c in absent), decoder_width=width,
                encoder_channels=[channels[i] for i in model.keep],
                encoder_reductions=[reductions[i] for i in model.keep],
                params=sum(p.numel() for p in model.parameters()))
    return model, info


def param_groups(model):
    """[encoder params, decoder + head params]: a fastai splitter (freeze() trains only the second group)."""
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    return [enc, [p for p in model.parameters() if id(p) not in ids]]
