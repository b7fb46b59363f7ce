"""The user's own world, up to the network boundary: W&B online (stubbed at wandb.Api / run.use_artifact /
wandb.alert / run.log_artifact), pretrained weights from a loopback HTTP mirror, the dataset identity a model
records and eval's refusal of other data, alerts and sweep trials."""
import hashlib
import http.server
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torchvision
from conftest import make_tiny_dataset

import eval as eval_cli
import train
from bddseg import config, layout, model_artifact, resolve, weights
from bddseg.checkpoint import save_checkpoint
from bddseg.cli import run_cli
from bddseg.models import build_model
from bddseg.training_run import TrainingRun, in_sweep

RESNET18 = "resnet18-f37072fd.pth"  # the file name torchvision's resnet18 weights have in torch hub's cache


# ------------------------------------------------------------------ data artifacts: their own project
class StubArtifact:
    """What wandb's use_artifact returns: `name` keeps the alias it was asked by; `version` is the real one."""
    def __init__(self, folder, ref):
        self.folder, (self.entity, self.project, self.name) = folder, ref.split("/")
        self.version = "v3"

    def download(self):
        return str(self.folder)


class StubRun:
    """An online W&B run as our code sees it; use_artifact / log_artifact / link_artifact only record the calls."""
    offline, disabled, entity, project, id, name, url, sweep_id = False, False, "me", "sweep-proj", "r1", "n", "u", ""

    def __init__(self, folder=None):
        self.folder, self.calls, self.summary = folder, [], {}

    def use_artifact(self, ref, type=None):
        self.calls.append(("use_artifact", ref, type))
        return StubArtifact(self.folder, ref)

    def log_artifact(self, art, aliases=()):
        self.calls.append(("log_artifact", art.name, art.type, list(aliases)))

    def link_artifact(self, art, target_path):
        self.calls.append(("link_artifact", art.name, target_path))


def test_data_artifact_is_looked_up_in_the_data_project_not_the_sweeps(tiny_dataset, monkeypatch):
    import wandb
    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(default_entity="me"))  # the API key's own entity
    monkeypatch.setenv("WANDB_PROJECT", "sweep-proj")  # what `wandb agent` sets for its trials (run: team/sweep-proj)
    run = StubRun(tiny_dataset)
    data = resolve.resolve_dataset("bdd_simple_1k_split", run)
    assert run.calls == [("use_artifact", "me/bddseg/bdd_simple_1k_split:latest", "split_data")]
    assert data.path == tiny_dataset and data.artifact == "me/bddseg/bdd_simple_1k_split:v3"  # the version, not alias
    monkeypatch.setattr(config, "DATA_ENTITY", "team")
    resolve.resolve_dataset("bdd_simple_1k_split:v2", run)
    resolve.resolve_dataset("other/proj/mydata:best", run)
    assert [c[1] for c in run.calls[1:]] == ["team/bddseg/bdd_simple_1k_split:v2", "other/proj/mydata:best"]


def test_data_project_setting_ignores_wandb_project(tmp_path):
    code = "from bddseg import config; print(config.DATA_PROJECT, config.DATA_ENTITY)"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_PROJECT": "sweep-proj"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["bddseg", "None"]
    env.update(BDDSEG_DATA_PROJECT="my-data", BDDSEG_DATA_ENTITY="team")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["my-data", "team"]


# ------------------------------------------------------------------ which data a model saw; eval's refusal
def train_in_process(data, out, *extra):
    handler = signal.getsignal(signal.SIGTERM)
    try:
        return train.main(["--data", str(data), "--output", str(out), "--img_size", "32", "--batch_size", "4",
                           "--epochs", "1", "--pretrained", "False", *extra])
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A copy of a tiny dataset and a model trained on it (module-wide: one training run)."""
    tmp = tmp_path_factory.mktemp("identity")
    data = make_tiny_dataset(tmp / "tiny_split")
    summary = train_in_process(data, tmp / "models")
    return SimpleNamespace(data=data, run_dir=tmp / "models" / "unet-tiny_split" / summary["run_dir"].split("/")[-1],
                           tmp=tmp)


def test_run_records_the_dataset_identity(trained):
    expected = hashlib.sha256((trained.data / layout.MANIFEST).read_bytes()).hexdigest()
    meta = json.loads((trained.run_dir / "meta.json").read_text())
    run_config = json.loads((trained.run_dir / "config.json").read_text())
    assert meta["data_manifest_sha256"] == run_config["data_manifest_sha256"] == expected
    assert meta["data_artifact"] is None  # offline: no W&B artifact was used
    files = layout.read_manifest(trained.data)["files"]
    train_rows = pd.read_csv(trained.data / layout.SPLIT_CSV).query("Stage == 'train'").File_Name
    assert json.loads((trained.run_dir / "train_images.json").read_text()) == \
        {f: files[f"images/{f}"]["sha256"] for f in train_rows}


def run_eval(argv, capsys):
    try:
        run_cli(eval_cli.main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def resplit(data, moved):
    """Move one training image into the test split and re-write the manifest (as a re-run data step would)."""
    df = pd.read_csv(data / layout.SPLIT_CSV)
    df.loc[df.File_Name == moved, "Stage"] = "test"
    df.to_csv(data / layout.SPLIT_CSV, index=False)
    layout.write_manifest(data, name=data.name, type="split_data", source="tests")


def test_eval_refuses_a_changed_dataset_and_checks_overlap_when_explicit(trained, tmp_path, capsys):
    data = shutil.copytree(trained.data, tmp_path / "tiny_split")
    meta = json.loads((trained.run_dir / "meta.json").read_text())
    meta["data_path"] = str(data)
    (trained.run_dir / "meta.json").write_text(json.dumps(meta))
    code, err = run_eval(["--model", str(trained.run_dir), "--out", str(tmp_path / "e0")], capsys)
    assert code == 0, err  # the same data: evaluated
    moved = pd.read_csv(data / layout.SPLIT_CSV).query("Stage == 'train'").File_Name.iloc[0]
    resplit(data, moved)
    code, err = run_eval(["--model", str(trained.run_dir), "--out", str(tmp_path / "e1")], capsys)
    assert code == 2 and "not the dataset the model was trained on" in err and "--data" in err
    code, err = run_eval(["--model", str(trained.run_dir), "--data", str(data), "--out", str(tmp_path / "e2")], capsys)
    assert code == 2 and "were in the model's training split" in err and moved in err
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()  # refused before writing anything
    other = make_tiny_dataset(tmp_path / "other_split", seed=7)  # other images: allowed, with a warning
    code, err = run_eval(["--model", str(trained.run_dir), "--data", str(other), "--out", str(tmp_path / "e3")], capsys)
    assert code == 0 and "warning: " in err and "not the dataset the model was trained on" in err


# ------------------------------------------------------------------ pretrained weights from a loopback mirror
@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server with a resnet18 state dict under /models/<torch hub file name>, as the only source."""
    folder = tmp_path / "served" / "models"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()  # random weights: what matters is that these arrive
    torch.save(state, folder / RESNET18)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "served"), **k)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("BDDSEG_OFFLINE")
    monkeypatch.setenv("BDDSEG_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights.answers.cache_clear()
    yield SimpleNamespace(state=state, requests=requests, port=server.server_port)
    server.shutdown()
    weights.answers.cache_clear()


def test_pretrained_weights_download_from_the_mirror_then_come_from_the_cache(mirror, capfd):
    model, info = build_model("resnet18", 7, pretrained=True)
    assert info["pretrained_loaded"] is True and info["pretrained_source"] == "download"
    assert mirror.requests == [f"/models/{RESNET18}"]
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: pretrained torchvision resnet18: downloaded http://127.0.0.1")
    assert torch.equal(model.encoder.stages[0][0].weight, mirror.state["conv1.weight"])
    assert torch.equal(model.encoder.stages[-1][-1][-1].conv2.weight, mirror.state["layer4.1.conv2.weight"])
    _, info = build_model("resnet18", 7, pretrained=True)
    assert info["pretrained_source"] == "cache" and len(mirror.requests) == 1  # no second download
    assert "cached" in capfd.readouterr().err


def test_pretrained_encoder_frozen_then_unfrozen_with_discriminative_lr(mirror, tiny_dataset, tmp_path):
    from fastai.callback.core import Callback
    config_ = train.parse_args(["--img_size=32", "--batch_size=4", "--seed=0", "--freeze_epochs=1", "--epochs=2",
                                "--lr=1e-3"])  # --pretrained True is the default
    dls = train.get_data(config_, tiny_dataset, "cpu")
    learn, info, _ = train.get_learner(config_, dls, "cpu")
    assert info["pretrained_loaded"] is True
    assert torch.equal(learn.model.encoder.stages[0][0].weight, mirror.state["conv1.weight"])
    seen = []

    class Probe(Callback):
        order = 100  # after UnfreezeAt's before_epoch

        def before_epoch(self):  # fastai keeps BatchNorm trainable in a frozen group (train_bn): convs only here
            enc = [m.weight for m in learn.model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
            dec = [p for p in learn.model.parameters() if all(p is not q for q in learn.model.encoder.parameters())]
            seen.append({"encoder_trains": [p.requires_grad for p in enc], "decoder_trains": {p.requires_grad
                         for p in dec}, "groups": len(self.opt.param_groups)})

        def after_batch(self):
            seen[-1]["lrs"] = [h["lr"] for h in self.opt.hypers]

    learn.add_cb(Probe())
    train.train(config_, learn, info, tmp_path, lambda m, metrics, e: None)
    assert not any(seen[0]["encoder_trains"]) and seen[0]["decoder_trains"] == {True}  # epoch 1: frozen
    assert all(seen[1]["encoder_trains"]) and seen[1]["decoder_trains"] == {True}  # epoch 2: unfrozen
    assert seen[0]["groups"] == seen[1]["groups"] == 2
    lrs = seen[1]["lrs"]
    assert lrs[0] == pytest.approx(lrs[1] / train.ENCODER_LR_DIV)  # discriminative: encoder at lr / 10


def test_unreachable_mirror_warns_fast_and_probes_once(mirror, monkeypatch, capfd):
    with socket.socket() as s:  # a loopback port with nothing listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("BDDSEG_WEIGHTS_URL", f"http://127.0.0.1:{closed}/models")
    t = time.perf_counter()
    for _ in range(2):
        _, info = build_model("resnet18", 7, pretrained=True)
        assert info["pretrained_loaded"] is False
    assert time.perf_counter() - t < 30  # generous on a shared 2-core machine; the probe itself is bounded to 2 s
    assert weights.answers.cache_info().misses == 1  # one probe for the process
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("does not answer" in ln and "random init" in ln for ln in lines)


def test_pretrained_false_never_touches_the_network(mirror, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    _, info = build_model("resnet18", 7, pretrained=False)
    assert info["pretrained_loaded"] is False and mirror.requests == []


# ------------------------------------------------------------------ alerts and sweep trials
def finished_run(monkeypatch, alerts):
    """A TrainingRun at its end, on a stubbed online W&B run; wandb.alert only records."""
    import wandb
    monkeypatch.setattr(wandb, "alert", lambda **k: alerts.append(k))
    run = TrainingRun(SimpleNamespace(registry=None), "p")
    run.wandb, run.t0 = SimpleNamespace(**{k: getattr(StubRun, k) for k in ("offline", "disabled", "id", "name",
                                           "url", "sweep_id")}, summary={}, dir="/tmp", finish=lambda **k: None), 0
    run.status, run.exit_code = "finished", 0
    return run


def test_alert_once_by_hand_never_in_a_sweep(monkeypatch):
    alerts = []
    finished_run(monkeypatch, alerts).finish()
    assert len(alerts) == 1 and alerts[0]["title"].startswith("train finished")
    for var in ("WANDB_SWEEP_ID", "BDDSEG_SWEEP_ID"):
        monkeypatch.setenv(var, "sw1")
        finished_run(monkeypatch, alerts).finish()
        monkeypatch.delenv(var)
    run = finished_run(monkeypatch, alerts)
    run.wandb.sweep_id = "sw2"
    run.finish()
    assert len(alerts) == 1  # no alert storm from sweep trials
    assert in_sweep(run.wandb) and not in_sweep(SimpleNamespace(sweep_id=None))


# ------------------------------------------------------------------ model artifacts: one collection per dataset
def test_aliases_move_best_only_when_beaten():
    assert model_artifact.aliases("a1", 0.5, None) == ["latest", "run-a1", "best"]
    assert model_artifact.aliases("a2", 0.4, 0.5) == ["latest", "run-a2"]
    assert model_artifact.aliases("a3", 0.6, 0.5) == ["latest", "run-a3", "best"]
    assert model_artifact.aliases("a4", float("nan"), None) == ["latest", "run-a4"]


def test_online_model_artifact_ranks_against_the_collection_and_links_the_registry(tmp_path, monkeypatch):
    import wandb
    asked = []

    class Api:
        def artifact(self, name, type=None):
            asked.append((name, type))
            return SimpleNamespace(metadata={"metrics": {"miou": 0.5}})

    monkeypatch.setattr(wandb, "Api", Api)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    run = StubRun()
    meta = {"dataset": "tiny_split", "metrics": {"miou": 0.6}, "arch": "resnet18", "run_id": "r1"}
    assert model_artifact.log_model(run, tmp_path, meta, registry="bdd-seg") == ["latest", "run-r1", "best"]
    assert asked == [("me/sweep-proj/unet-tiny_split:best", "model")]
    assert run.calls == [("log_artifact", "unet-tiny_split", "model", ["latest", "run-r1", "best"]),
                         ("link_artifact", "unet-tiny_split", "wandb-registry-model/bdd-seg")]
    run2 = StubRun()
    assert model_artifact.log_model(run2, tmp_path, {**meta, "metrics": {"miou": 0.4}}) == ["latest", "run-r1"]


def test_offline_best_comes_from_local_run_records(tmp_path):
    model, _ = build_model("resnet18", 7, pretrained=False)
    base = {"arch": "resnet18", "n_classes": 7, "dataset": "tiny_split"}
    for i, miou in enumerate([0.3, 0.55]):
        save_checkpoint(config.MODELS_DIR / "unet-tiny_split" / f"r{i}", model, {**base, "metrics": {"miou": miou}})
    other = {**base, "dataset": "other", "metrics": {"miou": 0.9}}
    save_checkpoint(config.MODELS_DIR / "unet-other" / "x", model, other)
    assert model_artifact.offline_best("tiny_split", config.MODELS_DIR / "unet-tiny_split" / "r9") == 0.55
    assert model_artifact.offline_best("tiny_split", config.MODELS_DIR / "unet-tiny_split" / "r1") == 0.3
    assert model_artifact.offline_best("nothing", tmp_path / "unet-nothing" / "x") is None
    elsewhere = tmp_path / "elsewhere" / "unet-tiny_split" / "r0"  # another --output: its own records
    assert model_artifact.offline_best("tiny_split", elsewhere) is None


def test_online_best_without_a_readable_collection(monkeypatch, capsys):
    import wandb

    def api(error):
        def artifact(name, type=None):
            raise error
        return lambda: SimpleNamespace(artifact=artifact)

    monkeypatch.setattr(wandb, "Api", api(ValueError("artifact 'unet-x:best' not found in 'me/p'")))
    assert model_artifact.online_best(StubRun(), "unet-x") is None  # none yet: this run becomes `best`
    monkeypatch.setattr(wandb, "Api", api(ConnectionError("timed out")))
    assert model_artifact.online_best(StubRun(), "unet-x") == float("inf")  # cannot tell: `best` stays put
    assert "warning: could not read me/sweep-proj/unet-x:best" in capsys.readouterr().err


def test_probe_goes_through_the_proxy_and_refuses_a_url_without_host(mirror, monkeypatch):
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{mirror.port}")  # a proxy on loopback that answers
    monkeypatch.setenv("no_proxy", "")
    assert weights.offline_reason("https://download.invalid/models/x.pth") is None  # the proxy was probed, not DNS
    assert "names no host" in weights.offline_reason("models/x.pth")
