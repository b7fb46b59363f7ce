"""One agent per GPU on one machine: `sweep.py agent ID --gpus 0,1,2,3` (or `all`, or `cpu:N` without CUDA).

Each worker is an agent process of its own (`sweep.py agent ID`, without --gpus) started with its GPU as
CUDA_VISIBLE_DEVICES, so every trial it runs sees that one GPU, and a worker runs one trial at a time: no two
trials share a GPU. All workers pull trials from the same store, like agents on several machines. `cpu:N`
starts N workers with no GPU visible, each on its own share of the CPU cores (CPU affinity, which train.py's
thread count follows, and OMP_NUM_THREADS / MKL_NUM_THREADS for other programs).

GPUs are listed without importing torch: BDDSEG_SWEEP_GPUS (an override: tests, or a machine without
nvidia-smi), else, when `nvidia-smi -L` lists any, CUDA_VISIBLE_DEVICES if set (what SLURM or a user granted) or
the listed ones.
A worker's label (gpu0, cpu1) is BDDSEG_AGENT_WORKER in its environment; the agent stores it on each trial with
the SLURM job/task it runs in (`worker_placement`), for `sweep.py status`.
"""
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

from bddseg.cli import UserError

from .runner import die_with_parent

WORKER_ENV = "BDDSEG_AGENT_WORKER"
GPUS_ENV = "BDDSEG_SWEEP_GPUS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class Worker:
    """One worker: its label, what its environment changes, and the CPUs it may use (None: all)."""
    label: str
    env: dict
    cpus: set = field(default=None)


def label():
    """This agent's worker label (gpu0, cpu1), or None for a plain agent."""
    return os.environ.get(WORKER_ENV) or None


def worker_placement() -> dict:
    """Where this agent runs, stored on each of its trials: worker label, GPU, SLURM job and array task."""
    env, out = os.environ, {}
    if label():
        out["worker"] = label()
    if env.get("CUDA_VISIBLE_DEVICES"):
        out["gpu"] = env["CUDA_VISIBLE_DEVICES"]
    if env.get("SLURM_JOB_ID"):
        task = env.get("SLURM_ARRAY_TASK_ID")
        out["slurm"] = f"{env.get('SLURM_ARRAY_JOB_ID')}_{task}" if task else env["SLURM_JOB_ID"]
    return out


def nvidia_smi() -> list:
    """GPU indices `nvidia-smi -L` lists ([] without the tool or a driver)."""
    try:
        text = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", text, flags=re.M)


def available_gpus() -> list:
    """The GPU ids this machine offers the agent (see the module docstring for where they come from)."""
    listed = lambda var: [g.strip() for g in os.environ[var].split(",") if g.strip() and g.strip() != "-1"]  # noqa
    if os.environ.get(GPUS_ENV) is not None:
        return listed(GPUS_ENV)
    found = nvidia_smi()  # a CUDA_VISIBLE_DEVICES exported on a machine without GPUs proves nothing
    return (listed("CUDA_VISIBLE_DEVICES") if os.environ.get("CUDA_VISIBLE_DEVICES") is not None else found) \
        if found else []


def cpu_shares(n: int) -> list:
    """The CPUs this process may use, split into n disjoint shares (round robin; one CPU each at least)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return [set(cpus[i::n]) or {cpus[i % len(cpus)]} for i in range(n)]


def cpu_workers(n: int) -> list:
    """N CPU workers: no GPU visible, each on its own share of the cores."""
    workers = []
    for i, cpus in enumerate(cpu_shares(n)):
        threads = {var: str(len(cpus)) for var in THREAD_VARS}
        workers.append(Worker(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": "", WORKER_ENV: f"cpu{i}", **threads}, cpus))
    return workers


def parse_gpus(text: str) -> list:
    """--gpus 0,1,2 | all | cpu:N -> workers; UserError (exit 2) for GPUs this machine does not have."""
    text = str(text).strip()
    if text.startswith("cpu:"):
        n = text[4:]
        if not n.isdigit() or int(n) < 1:
            raise UserError(f"--gpus {text}: expected cpu:N with N a positive number of CPU workers")
        return cpu_workers(int(n))
    have = available_gpus()
    if not have:
        raise UserError(f"--gpus {text}: no CUDA GPU on this machine (`nvidia-smi -L` lists none); "
                        f"--gpus cpu:N runs N workers on the CPU cores instead")
    wanted = have if text == "all" else [g.strip() for g in text.split(",") if g.strip()]
    missing = [g for g in wanted if g not in have]
    if missing or not wanted or len(set(wanted)) != len(wanted):
        raise UserError(f"--gpus {text}: GPU(s) {', '.join(missing) or text} not available or listed twice "
                        f"(this machine has: {', '.join(have)})")
    return [Worker(f"gpu{g}", {"CUDA_VISIBLE_DEVICES": g, WORKER_ENV: f"gpu{g}"}) for g in wanted]


def start(worker: Worker, argv: list) -> subprocess.Popen:
    """Start one worker's agent process (it dies with this one; output goes to ours)."""
    def setup():
        """In the worker, before exec: its CPU share, and death with this process."""
        if worker.cpus:
            os.sched_setaffinity(0, worker.cpus)
        die_with_parent()
    return subprocess.Popen(argv, env={**os.environ, **worker.env}, stdin=subprocess.DEVNULL, preexec_fn=setup)


def run_workers(workers: list, argv: list, say=print) -> int:
    """Run one agent process per worker until all end; Ctrl-C / SIGTERM stops them (their trials re-queued)."""
    say(f"starting {len(workers)} workers: {', '.join(w.label for w in workers)}")
    procs = [start(w, argv) for w in workers]
    stopping = []

    def forward(signum, frame):
        """Ctrl-C / SIGTERM here: SIGTERM to every worker still running (each re-queues its trial)."""
        stopping.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"workers done: exit codes {', '.join(f'{w.label}={c}' for w, c in zip(workers, codes))}")
    failed = [c if c > 0 else 128 - c for c in codes if c]  # killed by signal N: 128 + N, as a shell says
    return 130 if stopping else (failed[0] if failed else 0)
