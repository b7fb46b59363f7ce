"""slurm/agent.sbatch: its body with SLURM's variables set, and a real single-node SLURM job array.

The real test starts its own throwaway cluster of Debian's `slurm-wlm` (slurmctld + slurmd on 127.0.0.1, 2 CPUs,
no cgroups: proctrack/linuxproc) with a private `munge` daemon, submits an array of 2 agents on a grid of a
fake training program, cancels one task mid-trial with `scancel`, and checks that every grid point finished
exactly once (the cancelled task's trial re-queued and run by the other task). It needs root (slurmd) and the
packages (`bash .ci/slurm.sh`); elsewhere it is skipped, in CI it fails.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fake_programs.sweep_helpers import ROOT, created_id, env_for, sweep_cli, trials, write_config

SBATCH = ROOT / "slurm" / "agent.sbatch"
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "sbatch", "scancel", "squeue")
CONF = """\
ClusterName=bddsegtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=10
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_munge(root: Path):
    """A private munged (own key, socket, pid file) that only this cluster uses."""
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    subprocess.run(["/usr/sbin/munged", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"],
                   check=True, capture_output=True, timeout=30)


def stop_daemons(root: Path):
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture(scope="module")
def slurm_env():
    """Environment whose SLURM_CONF names a running single-node cluster."""
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing or os.geteuid() != 0:
        reason = f"missing {', '.join(missing)}" if missing else "slurmd needs root"
        if os.environ.get("CI"):
            pytest.fail(f"real SLURM test cannot run in CI ({reason}): .ci/run must call `bash .ci/slurm.sh` as root")
        pytest.skip(f"real single-node SLURM not available ({reason}; bash .ci/slurm.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="bddseg-slurm-"))
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname().split(".")[0], root=root, ctld_port=free_port(),
                                d_port=free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        start_munge(root)
        for daemon in (["/usr/sbin/slurmctld", "-c"], ["/usr/sbin/slurmd"]):
            subprocess.run(daemon + ["-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
        wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                                  text=True).stdout, 60, "the SLURM node to be idle")
        yield env
    finally:
        stop_daemons(root)
        time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)


def grid_sweep(tmp_path, sleep, epochs) -> tuple:
    """A grid of 4 points of fake_train.py in tmp_path's journal; (sweep id, journal path)."""
    path = write_config(tmp_path / "g.yaml", {"x": {"values": [0.1, 0.2, 0.3, 0.4]}, "sleep": {"value": sleep},
                                              "epochs": {"value": epochs}}, method="grid")
    r = sweep_cli(["create", path], tmp_path)
    assert r.returncode == 0, r.stderr
    return created_id(r.stdout), tmp_path / "sweeps_db" / "sweeps.journal"


def template_env(tmp_path, journal, **extra) -> dict:
    """What a task's environment holds: the shared store, where the project and its Python are."""
    return env_for(tmp_path, BDDSEG_SWEEP_STORAGE=str(journal), BDDSEG_DIR=str(ROOT), BDDSEG_PYTHON=sys.executable,
                   **extra)


def test_template_body_with_slurm_variables(tmp_path):
    sid, journal = grid_sweep(tmp_path, 0.01, 1)
    env = template_env(tmp_path, journal, SLURM_JOB_ID="501", SLURM_ARRAY_JOB_ID="500", SLURM_ARRAY_TASK_ID="1")
    r = subprocess.run(["bash", str(SBATCH), sid, "--count", "2"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "array task 1 of job 500" in r.stdout and "agent done: 2 trial(s)" in r.stdout
    done = [t for t in trials(journal, sid) if t.state.name == "COMPLETE"]
    assert len(done) == 2 and {t.user_attrs["slurm"] for t in done} == {"500_1"}
    r = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage: sbatch" in r.stderr
    env.pop("BDDSEG_SWEEP_STORAGE")
    r = subprocess.run(["bash", str(SBATCH), sid], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "BDDSEG_SWEEP_STORAGE" in r.stderr


def test_real_slurm_array_with_a_cancelled_task(tmp_path, slurm_env):
    sid, journal = grid_sweep(tmp_path, 0.5, 6)
    env = {**template_env(tmp_path, journal), "SLURM_CONF": slurm_env["SLURM_CONF"]}
    r = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/slurm-%A_%a.out",
                        str(SBATCH), sid], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]

    def running_on_task_1():
        return [t for t in trials(journal, sid) if t.state.name == "RUNNING" and t.user_attrs.get("slurm") == f"{job}_1"
                and t.intermediate_values]
    victim = wait_for(running_on_task_1, 90, "array task 1 to run a trial")[0]
    subprocess.run(["scancel", f"{job}_1"], env=env, check=True, timeout=30)
    squeue = ["squeue", "-h", "-j", job]
    wait_for(lambda: not subprocess.run(squeue, env=env, capture_output=True, text=True).stdout.strip(), 150,
             "the job array to end")
    outs = "".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
    ts = trials(journal, sid)
    done = [t for t in ts if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["config"]["x"] for t in done) == [0.1, 0.2, 0.3, 0.4], outs  # each exactly once
    failed = [t for t in ts if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [victim.number], outs
    rerun = next(t for t in done if t.system_attrs.get("failed_trial") == victim.number)
    assert rerun.user_attrs["slurm"] == f"{job}_0" and rerun.params == victim.params  # finished by the other task
    assert not [t for t in ts if t.state.name in ("RUNNING", "WAITING")]
