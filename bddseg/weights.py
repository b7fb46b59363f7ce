"""Pretrained weights, one rule for every encoder: the local cache, else a download when the network answers.

- torchvision: torch hub's cache ($TORCH_HOME/hub/checkpoints/<file>); a missing file is downloaded from the
  public host, or from `$BDDSEG_WEIGHTS_URL/<file>` when that is set (a flat folder of the files torch hub caches,
  e.g. http://host/models/resnet18-f37072fd.pth, for air-gapped clusters).
- timm: the Hugging Face cache; a missing model is downloaded from the hub (`HF_ENDPOINT` when set, e.g. a mirror).
- "the network answers": one TCP connection to the host (or to the proxy that $https_proxy / $http_proxy name)
  within PROBE_SECONDS, DNS included; the answer is kept for the process. `BDDSEG_OFFLINE=1` (the test suite sets
  it) or `HF_HUB_OFFLINE=1` (for the hub) means never try.
Whatever happens is said in one line on stderr: the cached file, the download, or why training starts from random
init. `--pretrained False` never gets here, so it never touches the network.
"""
import functools
import os
import re
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

PROBE_SECONDS = 2.0
MIRROR_ENV, OFFLINE_ENV = "BDDSEG_WEIGHTS_URL", "BDDSEG_OFFLINE"


def say(kind, msg):
    """One 'note: ...' or 'warning: ...' line on stderr."""
    print(f"{kind}: {msg}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def answers(host: str, port: int) -> bool:
    """True when a TCP connection to host:port opens within PROBE_SECONDS (DNS included); asked once per process."""
    opened = threading.Event()

    def connect():
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            opened.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()  # a thread bounds the DNS lookup too
    return opened.wait(PROBE_SECONDS)


def offline_reason(url, env=OFFLINE_ENV):
    """Why `url` is not to be fetched now ('BDDSEG_OFFLINE=1', '<host> does not answer'), or None to go ahead."""
    for var in (env, OFFLINE_ENV):
        if os.environ.get(var) == "1":
            return f"{var}=1"
    u = urlparse(url)
    if not u.hostname:
        return f"{url!r} names no host (expected e.g. http://host/models)"
    proxy = None if urllib.request.proxy_bypass(u.hostname) else urllib.request.getproxies().get(u.scheme)
    probe = urlparse(proxy if "://" in str(proxy) else f"http://{proxy}") if proxy else u  # the proxy answers
    port = probe.port or (443 if probe.scheme == "https" else 80)
    if answers(probe.hostname, port):
        return None
    return f"{probe.hostname}:{port}{' (the proxy)' if proxy else ''} does not answer within {PROBE_SECONDS:g} s"


def hub_file(url) -> Path:
    """Where torch.hub caches the weights file of `url`: $TORCH_HOME/hub/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def source_url(url) -> str:
    """Where to download `url` from: the mirror folder `$BDDSEG_WEIGHTS_URL/<file name>` when set, else `url`."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{hub_file(url).name}" if mirror else url


def torch_hub_file(url, what):
    """(weights file for `url` in torch hub's cache, 'cache'/'download'), downloading a missing file when the source
    answers and checking torch hub's sha256 prefix for the public host (a mirror's files are trusted as they are);
    (None, None) after one warning line when neither."""
    path = hub_file(url)
    if path.is_file():
        return path, "cache"
    src = source_url(url)
    why = offline_reason(src)
    if why:
        say("warning", f"no pretrained weights for {what}: {path} is missing and {why} (put {path.name} there, or "
                       f"set {MIRROR_ENV} to a folder that has it); training from random init")
        return None, None
    hash_prefix = re.search(r"-([a-f0-9]{6,})\.", path.name) if src == url else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(src, str(path), hash_prefix and hash_prefix.group(1), progress=False)
    except Exception as e:  # HTTP errors, a hash mismatch, a full disk: say which, keep going from random init
        say("warning", f"no pretrained weights for {what}: downloading {src} failed ({type(e).__name__}: {e}); "
                       f"training from random init")
        return None, None
    return path, "download"


def loaded(what, source, where):
    """The one line that says where loaded weights came from."""
    say("note", f"pretrained {what}: {'cached' if source == 'cache' else 'downloaded'} {where}")


def load_torch_hub_weights(model, url, what):
    """Load the weights for `url` (cached or downloaded) into `model`: 'cache'/'download', or None (one warning)."""
    path, source = torch_hub_file(url, what)
    if path is None:
        return None
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # tensors only, no code
    except Exception as e:  # corrupt or foreign file: say so, keep going from random init
        first = (str(e).strip().splitlines() or [""])[0][:200]
        say("warning", f"pretrained weights {path} for {what} unreadable ({type(e).__name__}: {first}); replace it "
                       f"with {url}; training from random init")
        return None
    loaded(what, source, path if source == "cache" else f"{source_url(url)} -> {path}")
    return source


def hf_hub_mode(repo, what):
    """Set the Hugging Face hub online or offline for `repo` by the rule: 'cache' when it is cached (no network
    needed), 'download' when the hub answers, None after one warning line when neither."""
    import huggingface_hub
    import huggingface_hub.constants as hub
    cached = any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f), str)
                 for f in ("model.safetensors", "pytorch_model.bin"))
    why = None if cached else offline_reason(hub.ENDPOINT, env="HF_HUB_OFFLINE")
    hub.HF_HUB_OFFLINE = cached or why is not None  # read by the hub at call time: offline fails fast, no retries
    if why:
        say("warning", f"no pretrained weights for {what}: hub repo {repo} is not in the Hugging Face cache "
                       f"{hub.HF_HUB_CACHE} and {why} (`hf download {repo}` where there is a network, copy that "
                       f"cache here, or set HF_ENDPOINT to a mirror); training from random init")
        return None
    return "cache" if cached else "download"
