"""U-Net builder: every encoder trains a step with a skip at each resolution; normalisation; pretrained offline."""
import socket
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import params
from bddseg import config
from bddseg.cli import UserError
from bddseg.models import ARCHS, build_model, param_groups

TIMM_ARCHS = ["timm/resnet18", "timm/resnet10t", "timm/convnext_tiny", "timm/efficientnet_b0"]  # 10t: the person recipe
H, W = 64, 114  # not multiples of 32


def encoder_conv_sizes(model, x):
    """Output sizes of every Conv2d inside model.encoder during a forward (1x1 = squeeze-excite on pooled maps)."""
    sizes, hooks = set(), []
    for m in model.encoder.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: sizes.add(tuple(out.shape[-2:]))))
    model(x)
    for h in hooks:
        h.remove()
    return {s for s in sizes if s != (1, 1)}


def decoder_skip_sizes(model, x):
    """Sizes of the skip tensors the decoder blocks actually receive, deep to shallow, and the final block's skip."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[1].shape[-2:])))
             for b in [*model.blocks, model.final]]
    out = model(x)
    for h in hooks:
        h.remove()
    return seen[:-1], seen[-1], out


@pytest.mark.parametrize("arch", [*ARCHS, *TIMM_ARCHS])
def test_every_encoder_trains_a_step_with_skips_at_each_stage(arch):
    torch.manual_seed(0)
    model, info = build_model(arch, 7, pretrained=False)
    assert info["arch"] == arch and info["pretrained_loaded"] is False
    assert info["params"] == sum(p.numel() for p in model.parameters()) < 40e6  # fastai's resnet50 U-Net: 339M
    x = torch.rand(2, 3, H, W)
    # expected skips, from the encoder's own convolutions: every distinct resolution but the deepest one
    conv_sizes = encoder_conv_sizes(model, x)
    deepest = min(conv_sizes, key=lambda s: s[0] * s[1])
    expected = sorted(conv_sizes - {deepest}, key=lambda s: s[0] * s[1])
    skips, final_skip, out = decoder_skip_sizes(model, x)
    assert skips == expected, f"{arch}: decoder skips {skips}, encoder resolutions {sorted(conv_sizes)}"
    assert len(model.blocks) == len(expected) == len(info["encoder_reductions"]) - 1
    assert final_skip == (H, W)  # the input image is the full-resolution skip
    assert len(set(info["encoder_reductions"])) == len(info["encoder_reductions"])
    assert out.shape == (2, 7, H, W)
    # one training step: every parameter gets a finite gradient
    y = torch.randint(0, 7, (2, H, W))
    y[:, :2] = params.IGNORE
    F.cross_entropy(out, y, ignore_index=params.IGNORE).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"{arch}: parameters outside the graph: {no_grad[:3]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder.parameters().__next__().grad.abs().sum() > 0


def test_stage_reductions_match_the_architectures():
    assert build_model("resnet18", 7, pretrained=False)[1]["encoder_reductions"] == [2, 4, 8, 16, 32]
    _, info = build_model("convnext_tiny", 7, pretrained=False)
    assert info["encoder_reductions"] == [4, 8, 16, 32] and info["encoder_channels"] == [96, 192, 384, 768]


def test_decoder_width_sets_every_decoder_block_and_is_checked():
    _, wide = build_model("resnet18", 7, pretrained=False)
    model, narrow = build_model("resnet18", 7, pretrained=False, width=8)
    assert (wide["decoder_width"], narrow["decoder_width"]) == (16, 8)
    # resnet18 stages at /2 /4 /8 /16 (skips) below /32: blocks of 8x the reduction channels, then 8 at full size
    assert [b.convs[-1][0].out_channels for b in model.blocks] == [128, 64, 32, 16]
    assert model.final.convs[-1][0].out_channels == 8 and model.head.in_channels == 8
    assert model(torch.rand(1, 3, 40, 70)).shape == (1, 7, 40, 70) and narrow["params"] < wide["params"]
    for bad in (0, 2.5, True):
        with pytest.raises(UserError, match="decoder width"):
            build_model("resnet18", 7, pretrained=False, width=bad)


def test_any_size_bf16_autocast_and_channels_last():
    model, _ = build_model("resnet18", 7, pretrained=False)
    model = model.to(memory_format=torch.channels_last)
    for h, w in [(64, 114), (33, 47), (96, 170)]:
        x = torch.rand(2, 3, h, w).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        assert out.shape == (2, 7, h, w) and out.dtype == torch.bfloat16
        out.float().square().mean().backward()
        assert torch.isfinite(out.float()).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", ["resnet18", "timm/efficientnet_b0", "timm/mobilevit_xxs"])
def test_normalisation_is_inside_the_model(arch):
    model, info = build_model(arch, 3, pretrained=False)
    if arch.startswith("timm/"):  # independently: timm's own data config for the full classifier
        import timm
        cfg = timm.data.resolve_data_config({}, model=timm.create_model(arch[5:], pretrained=False))
        mean, std = cfg["mean"], cfg["std"]
    else:
        mean, std = config.IMAGENET_MEAN, config.IMAGENET_STD
    assert info["mean"] == pytest.approx(mean) and info["std"] == pytest.approx(std)
    seen = []
    model.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.rand(1, 3, 64, 64)
    model.eval()(x)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expected)


def test_param_groups_split_encoder_from_decoder():
    model, _ = build_model("mobilenet_v3_small", 7, pretrained=False)
    enc, dec = param_groups(model)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(enc) == ids(model.encoder.parameters()) and not ids(enc) & ids(dec)
    assert ids(enc) | ids(dec) == ids(model.parameters())
    assert id(model.head.weight) in ids(dec)


def test_unknown_arch_is_a_user_error():
    for arch in ["resnet19", "timm/no_such_model", "timm/resnet18.no_such_tag", "timm/"]:
        with pytest.raises(UserError, match="timm"):
            build_model(arch, 7, pretrained=False)


# ---------------------------------------------------------------- pretrained weights: cached or one fast warning
@pytest.fixture
def no_network(monkeypatch):
    """Any connection or DNS lookup fails the test: pretrained loading must never touch the network."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def one_warning(capfd):
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: "), lines
    return lines[0]


def test_torchvision_pretrained_offline_warns_once_fast(tmp_path, monkeypatch, capfd, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    t = time.perf_counter()
    model, info = build_model("resnet18", 7, pretrained=True)
    assert time.perf_counter() - t < 20  # seconds, not network retries (generous: shared 2-core machine)
    assert info["pretrained_loaded"] is False
    line = one_warning(capfd)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in line and "random init" in line
    model(torch.rand(1, 3, 64, 64))  # still a usable model


def test_torchvision_pretrained_uses_the_cached_file(tmp_path, monkeypatch, capfd, no_network):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18().state_dict()
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference, cached)
    model, info = build_model("resnet18", 7, pretrained=True)
    assert info["pretrained_loaded"] is True and info["pretrained_source"] == "cache"
    assert capfd.readouterr().err.strip() == f"note: pretrained torchvision resnet18: cached {cached}"  # one line
    assert torch.equal(model.encoder.stages[0][0].weight, reference["conv1.weight"])
    assert torch.equal(model.encoder.stages[-1][0][0].conv1.weight, reference["layer4.0.conv1.weight"])
    cached.write_bytes(b"not a checkpoint")  # a corrupt cache file: warn, random init
    _, info = build_model("resnet18", 7, pretrained=True)
    assert info["pretrained_loaded"] is False and str(cached) in one_warning(capfd)


def test_timm_pretrained_offline_warns_once_fast(tmp_path, monkeypatch, capfd, no_network):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    t = time.perf_counter()
    _, info = build_model("timm/resnet18", 7, pretrained=True)
    assert time.perf_counter() - t < 20
    assert info["pretrained_loaded"] is False
    line = one_warning(capfd)
    assert "timm/resnet18.a1_in1k" in line and str(tmp_path) in line


def test_timm_pretrained_uses_the_hf_cache(tmp_path, monkeypatch, capfd, no_network):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(reference, str(repo / "snapshots" / commit / "model.safetensors"))
    model, info = build_model("timm/resnet18", 7, pretrained=True)
    assert info["pretrained_loaded"] is True and "warning" not in capfd.readouterr().err
    assert torch.equal(model.encoder.conv1.weight, reference["conv1.weight"])
    assert torch.equal(model.encoder.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])

