"""The W&B mode rule, the dataset resolver, atomic outputs and boolean parsing."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import params
import utils


def test_mode_rule_env_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert utils.wandb_mode() == "disabled"


def test_mode_rule_online_with_key(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert utils.wandb_mode() == "online"


def test_mode_rule_online_with_netrc(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert utils.wandb_mode() == "online"


def test_mode_rule_offline_without_key(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(utils, "_notified", False)
    assert utils.wandb_mode() == "offline"
    assert utils.wandb_mode() == "offline"
    assert capsys.readouterr().err.count("offline mode") == 1  # one-line notice, once


def test_init_wandb_offline_never_prompts(monkeypatch):
    """A real wandb.init with no key and no mode: offline run dir, no prompt (stdin closed), quick exit."""
    monkeypatch.delenv("WANDB_MODE")
    code = ("import utils; r = utils.init_wandb(project='t', job_type='test'); "
            "print('OFFLINE', r.offline); r.log({'x': 1}); r.finish()")
    out = subprocess.run([sys.executable, "-c", code], cwd=params.ROOT, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OFFLINE True" in out.stdout
    assert "offline mode" in out.stderr
    assert list(Path(os.environ["WANDB_DIR"]).glob("wandb/offline-run-*"))


def test_resolve_data_folder_and_artifact_name(tmp_path, monkeypatch):
    folder = tmp_path / "mydata"
    folder.mkdir()
    assert utils.resolve_data(str(folder)) == folder.resolve()
    monkeypatch.setattr(params, "ARTIFACTS_DIR", tmp_path)
    assert utils.resolve_data("mydata") == folder.resolve()
    assert utils.resolve_data("entity/project/mydata:v3") == folder.resolve()
    with pytest.raises(utils.UserError, match="prepare.py"):
        utils.resolve_data("nope")


def test_atomic_dir_success_and_failure(tmp_path):
    final = tmp_path / "out"
    with utils.atomic_dir(final) as d:
        (d / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with utils.atomic_dir(final) as d:
            (d / "a.txt").write_text("2")
            raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1"  # old output kept, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_and_json(tmp_path):
    utils.write_json(tmp_path / "x" / "m.json", {"a": 1})
    assert (tmp_path / "x" / "m.json").read_text().strip().startswith("{")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["m.json"]


@pytest.mark.parametrize("s,v", [("True", True), ("true", True), ("1", True), ("False", False),
                                 ("false", False), ("0", False)])
def test_str2bool(s, v):
    assert utils.str2bool(s) is v


def test_str2bool_rejects():
    with pytest.raises(argparse.ArgumentTypeError):
        utils.str2bool("maybe")


def test_frame_size():
    assert params.frame_size(180) == (180, 320)
    assert params.frame_size(64) == (64, 114)
