"""Run one trial's program as a subprocess and follow the metric lines it appends to $SWEEP_METRICS_FILE.

The program gets an argv list (never a shell string), its own process group (so stopping it also stops its
data-loader workers), and on Linux it is told to exit when the agent dies. Its output goes to a log file.
While it runs: a heartbeat every few seconds, and each new complete JSON line goes to `on_line`, which may
ask to stop the trial (hyperband); the program then gets SIGTERM, and SIGKILL after `kill_delay` seconds.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KILL_DELAY = 30    # seconds between SIGTERM and SIGKILL, as wandb agent
POLL = 0.1         # seconds between looks at the metrics file
TAIL_LINES = 20


@dataclass
class Outcome:
    """How a trial's process ended: state is 'finished', 'stopped' (asked to by on_line) or 'failed'."""
    state: str
    returncode: int = None
    error: str = None
    log_tail: str = ""
    duration: float = 0.0


class MetricsTail:
    """Complete new JSON-object lines of a file another process appends to (partial last lines wait)."""

    def __init__(self, path):
        self.path, self.pos, self.partial, self.bad = Path(path), 0, b"", 0

    def read(self, final: bool = False) -> list:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
                self.pos = f.tell()
            self.partial += chunk
        *lines, self.partial = self.partial.split(b"\n")
        if final and self.partial.strip():
            lines, self.partial = lines + [self.partial], b""
        out = []
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                out.append(obj)
            elif line.strip():
                self.bad += 1
        return out


def log_tail(path, n: int = TAIL_LINES) -> str:
    """The last n lines of a log file ('' when it does not exist)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def die_with_parent():
    """In the child, before exec: own process group, and SIGTERM when the agent process dies (Linux)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


class Heartbeat:
    """Calls beat() every `interval` seconds in a thread until stopped (errors are ignored: the next beat retries)."""

    def __init__(self, beat, interval: float):
        self.beat, self.interval, self.stop_event = beat, interval, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.wait(self.interval):
            try:
                self.beat()
            except Exception:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()


def stop(proc, kill_delay: float = KILL_DELAY) -> None:
    """SIGTERM to the trial's process group, SIGKILL after kill_delay seconds if it is still there."""
    for sig, wait in ((signal.SIGTERM, kill_delay), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (e.g. data-loader workers)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv, env: dict, log_path, metrics_path, on_line, beat=None, interval: float = 10,
        kill_delay: float = KILL_DELAY, echo=None) -> Outcome:
    """Run argv to the end (or until on_line returns True); each metric line goes to on_line as a dict."""
    log_path, metrics_path = Path(log_path), Path(metrics_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text("")
    tail, start = MetricsTail(metrics_path), time.monotonic()
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(argv, env={**env, "SWEEP_METRICS_FILE": str(metrics_path)}, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=die_with_parent if os.name == "posix" else None)
        except OSError as e:
            return Outcome("failed", error=f"cannot start {argv[0]!r}: {e}", duration=time.monotonic() - start)
    shown = 0
    with Heartbeat(beat or (lambda: None), interval):
        try:
            stopped = False
            while True:
                done = proc.poll() is not None
                for line in tail.read(final=done):
                    if not stopped and on_line(line):
                        stopped = True
                        stop(proc, kill_delay)
                if echo:
                    shown = _echo(log_path, shown, echo)
                if stopped or done:
                    break
                time.sleep(POLL)
        except BaseException:  # Ctrl-C / SIGTERM to the agent: take the trial's processes down too
            stop(proc, min(kill_delay, 10))
            raise
    returncode = proc.wait()
    duration = time.monotonic() - start
    if stopped:
        return Outcome("stopped", returncode, duration=duration)
    if returncode != 0:
        return Outcome("failed", returncode, f"exit code {returncode}", log_tail(log_path), duration)
    return Outcome("finished", returncode, duration=duration, log_tail=log_tail(log_path))


def _echo(path, shown: int, out) -> int:
    """Print what the trial wrote to its log since last time (--verbose)."""
    with open(path, "rb") as f:
        f.seek(shown)
        chunk = f.read()
    if chunk:
        out.write(chunk.decode(errors="replace"))
        out.flush()
    return shown + len(chunk)
