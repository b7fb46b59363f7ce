"""Shared plumbing for every entry point: the W&B mode rule, the dataset resolver, atomic writes, CLI errors."""
import argparse
import json
import netrc
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import params

# No internet at run time: hubs must fail fast instead of retrying (set HF_HUB_OFFLINE=0 to allow downloads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, exit code 2, no traceback."""


def run_cli(main, *args, **kwargs):
    """Run an entry point's main(); a UserError becomes 'error: ...' on stderr and exit code 2."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- W&B mode rule (the only place it lives)
def has_api_key() -> bool:
    """True when a W&B API key is configured (WANDB_API_KEY, or a $NETRC / ~/.netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


_notified = False


def wandb_mode() -> str:
    """WANDB_MODE if set; else 'online' when an API key is configured; else 'offline' with a one-line notice."""
    global _notified
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if has_api_key():
        return "online"
    if not _notified:
        print("W&B: no API key configured -> offline mode (runs stay under ./wandb; `wandb sync` uploads them later)",
              file=sys.stderr)
        _notified = True
    return "offline"


def init_wandb(**kwargs):
    """wandb.init with the project's mode rule; never prompts, never waits on the network when offline."""
    import wandb
    kwargs.setdefault("entity", params.ENTITY)
    return wandb.init(mode=wandb_mode(), **kwargs)


def is_online(run) -> bool:
    """True for a live online W&B run (not offline, not disabled)."""
    return run is not None and not getattr(run, "offline", True) and not getattr(run, "disabled", False)


# ---------------------------------------------------------------- artifact resolver (the only place it lives)
def resolve_data(name_or_path=None, run=None) -> Path:
    """Dataset folder for an artifact name or a path: an existing folder, `use_artifact` online, or the local copy."""
    name_or_path = str(name_or_path or params.PROCESSED_DATA_AT)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = name_or_path.split("/")[-1].split(":")[0]
    if is_online(run):
        ref = name_or_path if "/" in name_or_path else f"{params.WANDB_PROJECT}/{name_or_path}"  # data step's project
        ref = ref if ":" in ref else f"{ref}:latest"
        try:
            return Path(run.use_artifact(ref).download()).resolve()
        except Exception as e:  # fall back to the local folder, but say so
            print(f"W&B: could not use artifact {ref!r} ({e}); trying the local copy", file=sys.stderr)
    local = params.ARTIFACTS_DIR / name
    if local.is_dir():
        return local.resolve()
    raise UserError(f"dataset {name_or_path!r} not found: no such folder and no local artifact at {local} "
                    f"(run `python data/prepare.py` first, or pass --data with a processed dataset folder)")


# ---------------------------------------------------------------- atomic outputs
def atomic_write(path, data) -> Path:
    """Write text or bytes to `path` via a temp file + rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def write_json(path, obj) -> Path:
    """Atomically write `obj` as indented JSON."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_dir(final):
    """Yield a temp folder beside `final`; on success it replaces `final`, on any error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- CLI helpers
def str2bool(v) -> bool:
    """Parse booleans the way `wandb agent` passes them: True/False/true/false/1/0 (also yes/no)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False/1/0), got {v!r}")
