"""Two agents sharing one sweep through a real PostgreSQL server, set up the way the README tells users to.

The fixture starts a throwaway cluster of Debian's `postgresql` (initdb + pg_ctl, as the `postgres` user when
run as root) on a free loopback port, creates a role with a password and a database it owns (the README's
`createuser` / `createdb` steps), and the agents get `--storage postgresql://user:password@127.0.0.1:port/db`.
BDDSEG_TEST_POSTGRES_URL points the test at an existing server instead.
"""
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from fake_programs.sweep_helpers import start_agent, trials, write_config

import sweep
from bddseg.sweeper.study import best_trial

PASSWORD = "sweep-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("BDDSEG_TEST_POSTGRES_URL"):
        yield os.environ["BDDSEG_TEST_POSTGRES_URL"]
        return
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing in CI: .ci/run must call `bash .ci/postgres.sh` first")
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): "
                    "sudo apt-get install postgresql, or bash .ci/postgres.sh")
    bindir = Path(initdb[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bddseg-pg-"))
    as_postgres = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def pg(tool, *args):
        subprocess.run(as_postgres + [str(bindir / tool), *map(str, args)], check=True, capture_output=True,
                       timeout=120)

    port, data = free_port(), root / "data"
    pg("initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
       "-E", "UTF8", "--locale=C")
    pg("pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "start",
       "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        pg("psql", "-h", root, "-p", port, "-U", "postgres", "-c", f"CREATE ROLE bddseg LOGIN PASSWORD '{PASSWORD}'")
        pg("createdb", "-h", root, "-p", port, "-U", "postgres", "-O", "bddseg", "bddseg_sweeps")
        yield f"postgresql://bddseg:{PASSWORD}@127.0.0.1:{port}/bddseg_sweeps"
    finally:
        pg("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_agents_share_a_grid_through_postgres(tmp_path, postgres_url, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "pg.yaml", {"x": {"values": [0.1, 0.2, 0.3, 0.4]}, "sleep": {"values": [0.1, 0.2]}},
                        method="grid", name="pg-grid")
    assert sweep.main(["--storage", postgres_url, "create", str(path)]) == 0
    sid = capsys.readouterr().out.split("Created sweep with ID: ")[1].split()[0]
    agents = [start_agent(["agent", sid, "--storage", postgres_url], tmp_path, f"pg{i}.log") for i in range(2)]
    assert [a.wait(timeout=180) for a in agents] == [0, 0], (tmp_path / "pg0.log").read_text()
    ts = trials(postgres_url, sid)
    combos = sorted((t.user_attrs["config"]["x"], t.user_attrs["config"]["sleep"]) for t in ts)
    assert combos == sorted(itertools.product([0.1, 0.2, 0.3, 0.4], [0.1, 0.2]))  # each exactly once
    assert all(t.state.name == "COMPLETE" for t in ts) and len({t.user_attrs["agent"] for t in ts}) == 2
    logs = "".join((tmp_path / f"pg{i}.log").read_text() for i in range(2))
    assert "bddseg:***@127.0.0.1" in logs and PASSWORD not in logs  # the password is never printed
    best = best_trial("pg-grid", postgres_url)
    assert best["params"]["x"] == 0.4 and best["value"] == pytest.approx(0.42)


@pytest.mark.parametrize("method", ["grid", "random"])
def test_four_agents_never_exceed_run_cap_nor_repeat_a_point(tmp_path, postgres_url, monkeypatch, capsys, method):
    monkeypatch.chdir(tmp_path)
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    path = write_config(tmp_path / "cap.yaml", {"x": {"values": values}, "sleep": {"values": [0.05, 0.1]}},
                        method=method, run_cap=6, name=f"pg-cap-{method}")
    assert sweep.main(["--storage", postgres_url, "create", str(path)]) == 0
    sid = capsys.readouterr().out.split("Created sweep with ID: ")[1].split()[0]
    agents = [start_agent(["agent", sid, "--storage", postgres_url], tmp_path, f"cap{i}.log") for i in range(4)]
    assert [a.wait(timeout=180) for a in agents] == [0] * 4, (tmp_path / "cap0.log").read_text()
    ran = [t for t in trials(postgres_url, sid) if t.state.name != "WAITING" and "skipped" not in t.user_attrs]
    points = [(t.user_attrs["config"]["x"], t.user_attrs["config"]["sleep"]) for t in ran]
    assert len(ran) == 6 and all(t.state.name == "COMPLETE" for t in ran)  # the cap, exactly
    assert len(set(points)) == 6  # no point twice
    assert all("run_cap 6 reached" in (tmp_path / f"cap{i}.log").read_text() for i in range(4))


def test_database_connections_are_checked_and_recycled(postgres_url):
    from bddseg.sweeper import storage as st
    engine = st.get_storage(postgres_url).engine
    assert engine.pool._pre_ping and engine.pool._recycle == st.POOL_RECYCLE


def test_claim_lock_is_held_on_the_study_the_agent_uses(tmp_path, postgres_url, monkeypatch, capsys):
    """The agent locks `study._storage`, which Optuna wraps in a cache: the advisory lock must still be taken."""
    from sqlalchemy import create_engine, text

    from bddseg.sweeper import storage as st
    from bddseg.sweeper.study import load_sweep
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "lock.yaml", {"x": {"values": [0.1, 0.2]}}, method="random", name="pg-lock")
    assert sweep.main(["--storage", postgres_url, "create", str(path)]) == 0
    sid = capsys.readouterr().out.split("Created sweep with ID: ")[1].split()[0]
    study, _ = load_sweep(sid, st.get_storage(postgres_url))
    other = create_engine(st.sqlalchemy_url(postgres_url))

    def free() -> bool:  # can another session take the sweep's lock right now?
        with other.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": st.lock_key(sid)}).scalar()
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": st.lock_key(sid)})
            return got

    assert free()
    with st.claim_lock(study._storage, study.study_name):
        assert not free()
    assert free()
    other.dispose()
