"""The W&B mode rule, the only place it lives: WANDB_MODE if set, online with an API key, offline otherwise.

`init_wandb` never prompts for a key and never waits on the network when offline (runs sync later with
`wandb sync`).
"""
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from bddseg import config


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
    kwargs.setdefault("entity", config.ENTITY)
    return wandb.init(mode=wandb_mode(), **kwargs)


def is_online(run) -> bool:
    """True for a live online W&B run (not offline, not disabled)."""
    return run is not None and not getattr(run, "offline", True) and not getattr(run, "disabled", False)


def where_logged(run) -> str:
    """'online: <url>' or 'offline: <run folder>' (sync it later with `wandb sync`)."""
    return f"online: {run.url}" if is_online(run) else f"offline: {Path(run.dir).parent}"
