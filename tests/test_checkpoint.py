"""Checkpoint folders: save -> load gives identical predictions; every bad folder is a UserError naming the file."""
import json

import pytest
import torch
from safetensors.torch import load_file

from bddseg import checkpoint
from bddseg.checkpoint import META, WEIGHTS, load_checkpoint, save_checkpoint
from bddseg.models import build_model
from bddseg.cli import UserError

META_IN = {"arch": "mobilenet_v3_small", "n_classes": 7, "classes": ["background", "road", "traffic light",
           "traffic sign", "person", "vehicle", "bicycle"], "img_size": [64, 114], "config": {"lr": 2e-3}}


def trained_model(arch="mobilenet_v3_small", n_classes=7):
    """A model whose BN statistics and weights differ from a fresh build (a few SGD steps in train mode)."""
    torch.manual_seed(0)
    model, _ = build_model(arch, n_classes, pretrained=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.rand(2, 3, 64, 114)).mean().backward()
        opt.step()
        opt.zero_grad()
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, model) of a saved channels_last mobilenet_v3_small checkpoint."""
    model = trained_model().to(memory_format=torch.channels_last)
    folder = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "run-abc", model, META_IN)
    return folder, model


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "timm/efficientnet_b0"])
def test_round_trip_gives_identical_predictions(tmp_path, arch):
    model = trained_model(arch).eval()
    folder = save_checkpoint(tmp_path / "run", model, {**META_IN, "arch": arch})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp folders left behind
    loaded, meta = load_checkpoint(folder)
    assert not loaded.training
    x = torch.rand(3, 3, 64, 114)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["arch"] == arch and meta["classes"] == META_IN["classes"] and meta["config"] == {"lr": 2e-3}


def test_meta_is_self_describing_and_weights_are_tensors(saved):
    folder, model = saved
    meta = json.loads((folder / META).read_text())
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["img_size"] == [64, 114]
    state = load_file(str(folder / WEIGHTS))  # plain safetensors, readable without bddseg
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_channels_last_checkpoint_loads_identically(saved):
    folder, model = saved
    loaded, _ = load_checkpoint(folder)
    loaded = loaded.to(memory_format=torch.channels_last)  # same layout -> same kernels -> bitwise equal
    x = torch.rand(2, 3, 48, 80).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, saved):
    folder, model = saved
    target = save_checkpoint(tmp_path / "run", model, META_IN)
    before = (target / WEIGHTS).read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(target, model, META_IN)
    assert (target / WEIGHTS).read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(tmp_path / "other", model, {"n_classes": 7})


def copy_of(saved, tmp_path):
    """A writable copy of the saved checkpoint folder."""
    folder, model = saved
    return save_checkpoint(tmp_path / "copy", model, META_IN)


def edit_meta(folder, **changes):
    meta = json.loads((folder / META).read_text())
    meta.update(changes)
    (folder / META).write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


@pytest.mark.parametrize("case, names, says", [
    ("no folder", "nowhere", "not found"),
    ("no meta", META, "missing"),
    ("no weights", WEIGHTS, "missing"),
    ("corrupt weights", WEIGHTS, "safetensors"),
    ("truncated weights", WEIGHTS, "safetensors"),
    ("meta not json", META, "not valid JSON"),
    ("meta not an object", META, "JSON object"),
    ("meta without arch", META, "arch"),
    ("meta with bad n_classes", META, "n_classes"),
    ("meta with unknown arch", META, "unknown arch"),
    ("weights of another arch", WEIGHTS, "does not match"),
    ("weights for other classes", WEIGHTS, "another shape"),
])
def test_bad_checkpoints_raise_user_errors_naming_the_file(saved, tmp_path, case, names, says):
    folder = tmp_path / "nowhere" if case == "no folder" else copy_of(saved, tmp_path)
    if case == "no meta":
        (folder / META).unlink()
    elif case == "no weights":
        (folder / WEIGHTS).unlink()
    elif case == "corrupt weights":
        (folder / WEIGHTS).write_bytes(b"\x00garbage" * 10)
    elif case == "truncated weights":
        data = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    elif case == "meta not json":
        (folder / META).write_text('{"arch": "resnet18",')
    elif case == "meta not an object":
        (folder / META).write_text("[1, 2]")
    elif case == "meta without arch":
        edit_meta(folder, arch=None)
    elif case == "meta with bad n_classes":
        edit_meta(folder, n_classes="seven")
    elif case == "meta with unknown arch":
        edit_meta(folder, arch="resnet19")
    elif case == "weights of another arch":
        edit_meta(folder, arch="regnet_x_400mf")
    elif case == "weights for other classes":
        edit_meta(folder, n_classes=5)
    with pytest.raises(UserError) as err:
        load_checkpoint(folder)
    assert names in str(err.value) and says in str(err.value), str(err.value)


def test_absent_classes_are_never_predicted_and_survive_the_round_trip(tmp_path):
    torch.manual_seed(0)
    model, info = build_model("mobilenet_v3_small", 7, pretrained=False, absent=[2])
    assert info["absent_classes"] == [2]
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[2] = 1e3  # the head alone would say "traffic light" everywhere
    model.eval()
    x = torch.rand(2, 3, 64, 114)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert not (pred == 2).any() and "class_offset" not in model.state_dict()
    folder = save_checkpoint(tmp_path / "run", model, {**META_IN, "model_info": info})
    loaded, _ = load_checkpoint(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).argmax(1), pred, rtol=0, atol=0)
    with pytest.raises(UserError, match="absent classes"):
        build_model("mobilenet_v3_small", 3, pretrained=False, absent=[0, 1, 2])


def test_decoder_width_survives_the_round_trip(tmp_path):
    torch.manual_seed(0)
    model, info = build_model("mobilenet_v3_small", 7, pretrained=False, width=8)
    model.eval()
    x = torch.rand(2, 3, 64, 114)
    folder = save_checkpoint(tmp_path / "run", model, {**META_IN, "model_info": info})
    loaded, _ = load_checkpoint(folder)
    assert loaded.head.in_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    meta = json.loads((folder / META).read_text())
    (folder / META).write_text(json.dumps({**meta, "model_info": {**info, "decoder_width": 16}}))
    with pytest.raises(UserError, match="does not match .*decoder width 16"):  # a meta.json that lies about it
        load_checkpoint(folder)
    for model_info, says in [([8], "model_info must be a JSON object"), ({"decoder_width": "8"}, "decoder width"),
                             ({"absent_classes": 5}, "malformed model_info")]:
        (folder / META).write_text(json.dumps({**meta, "model_info": model_info}))
        with pytest.raises(UserError, match=says) as err:
            load_checkpoint(folder)
        assert str(folder / META) in str(err.value)
