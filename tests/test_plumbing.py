"""The package's plumbing: W&B mode rule, dataset resolver, atomic outputs, boolean parsing; and the layout rules
(the package imports from anywhere, never the top-level scripts, never edits the import path or the environment)."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import params
import utils
from bddseg import atomic, cli, config, resolve, wb


def test_mode_rule_env_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wb.wandb_mode() == "disabled"


def test_mode_rule_online_with_key(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wb.wandb_mode() == "online"


def test_mode_rule_online_with_netrc(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wb.wandb_mode() == "online"


def test_mode_rule_offline_without_key(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(wb, "_notified", False)
    assert wb.wandb_mode() == "offline"
    assert wb.wandb_mode() == "offline"
    assert capsys.readouterr().err.count("offline mode") == 1  # one-line notice, once


def test_init_wandb_offline_never_prompts(monkeypatch, tmp_path):
    """A real wandb.init with no key and no mode: offline run dir, no prompt (stdin closed), quick exit."""
    monkeypatch.delenv("WANDB_MODE")
    code = ("from bddseg.wb import init_wandb; r = init_wandb(project='t', job_type='test'); "
            "print('OFFLINE', r.offline); r.log({'x': 1}); r.finish()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OFFLINE True" in out.stdout
    assert "offline mode" in out.stderr
    assert list(Path(os.environ["WANDB_DIR"]).glob("wandb/offline-run-*"))


def test_resolve_data_folder_and_artifact_name(tmp_path, monkeypatch):
    folder = tmp_path / "mydata"
    folder.mkdir()
    assert resolve.resolve_data(str(folder)) == folder.resolve()
    monkeypatch.setattr(config, "ARTIFACTS_DIR", tmp_path)
    assert resolve.resolve_data("mydata") == folder.resolve()
    assert resolve.resolve_data("entity/project/mydata:v3") == folder.resolve()
    with pytest.raises(cli.UserError, match="prepare.py"):
        resolve.resolve_data("nope")


def test_atomic_dir_success_and_failure(tmp_path):
    final = tmp_path / "out"
    with atomic.atomic_dir(final) as d:
        (d / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as d:
            (d / "a.txt").write_text("2")
            raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1"  # old output kept, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_and_json(tmp_path):
    atomic.write_json(tmp_path / "x" / "m.json", {"a": 1})
    assert (tmp_path / "x" / "m.json").read_text().strip().startswith("{")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["m.json"]


@pytest.mark.parametrize("s,v", [("True", True), ("true", True), ("1", True), ("False", False),
                                 ("false", False), ("0", False)])
def test_str2bool(s, v):
    assert cli.str2bool(s) is v


def test_str2bool_rejects():
    with pytest.raises(argparse.ArgumentTypeError):
        cli.str2bool("maybe")


def test_frame_size():
    assert config.frame_size(180) == (180, 320)
    assert config.frame_size(64) == (64, 114)
    assert config.frame_size(240, 4 / 3) == (240, 320) and config.frame_size(90, 4 / 3) == (90, 120)


# ------------------------------------------------------------------ layout rules
PACKAGE = sorted(p for p in (config.ROOT / "bddseg").rglob("*.py"))
MODULES = [".".join(p.relative_to(config.ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE]
SOURCES = [p for p in config.ROOT.rglob("*.py") if not {".venv", ".git"} & set(p.relative_to(config.ROOT).parts)]


def test_every_package_module_imports_from_outside_the_repo(tmp_path):
    """`import bddseg.X` works from any folder (installed package), loads neither params nor utils, and leaves
    os.environ as it was (environment changes happen in the entry points' main; scikit-learn's own KMP_* settings
    on import are made before the snapshot)."""
    code = ("import importlib, os, sys\n"
            "import fastai.learner, optuna, sklearn.metrics, torch, wandb  # third-party libraries may set variables\n"
            "before = dict(os.environ)\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "assert 'params' not in sys.modules and 'utils' not in sys.modules, 'package imported a top-level script'\n"
            "changed = {k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)}\n"
            "assert not changed, f'environment changed at import: {changed}'\n"
            "print('imported', len(sys.modules))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "imported" in r.stdout, r.stderr[-3000:]
    assert len(MODULES) > 20


def test_no_sys_path_edits_and_no_upward_imports():
    path_edit = "sys." + "path"  # spelled apart so that this file passes its own check
    assert [p for p in SOURCES if path_edit in p.read_text()] == []
    upward = [p for p in PACKAGE if any(line.strip() in ("import params", "import utils") or
                                        line.strip().startswith(("from params import", "from utils import"))
                                        for line in p.read_text().splitlines())]
    assert upward == []


def test_course_modules_re_export_the_package():
    assert params.BDD_CLASSES is config.BDD_CLASSES and params.RECIPES is config.RECIPES
    assert utils.resolve_data is resolve.resolve_data and utils.init_wandb is wb.init_wandb
    assert utils.UserError is cli.UserError and set(params.__all__) <= set(dir(config))


def test_reuse_image_memory_raises_pils_block_cache_and_never_lowers_it():
    from PIL import Image
    before = Image.core.get_blocks_max()
    try:
        Image.core.set_blocks_max(0)  # Pillow's default: every freed image block goes back to the system
        config.reuse_image_memory(8)
        assert Image.core.get_blocks_max() == 8
        config.reuse_image_memory(4)  # a larger setting (e.g. PILLOW_BLOCKS_MAX) is kept
        assert Image.core.get_blocks_max() == 8
    finally:
        Image.core.set_blocks_max(before)
