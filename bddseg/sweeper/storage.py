"""Where sweeps live: an embedded journal file that several local agents share, or any SQLAlchemy URL.

Default: Optuna's JournalStorage on a JournalFileBackend at `config.SWEEPS_DIR/sweeps.journal`. Every write is
one appended log line under a file lock, every read replays the log, so many agent processes on one machine
share it with no "database is locked" failures (which SQLite gives several writers) and no server.
For several machines pass a database URL (PostgreSQL: `postgresql://user:password@host/db`).

Both get heartbeats: a running trial whose agent stops beating (killed, machine lost) is marked failed and
re-queued for another agent, at most MAX_RETRY times (Optuna's RetryHeartbeatStaleTrialCallback). RDBStorage
has that built in; the journal gets it here through Optuna's BaseHeartbeat interface, one touch-file per trial.
A trial whose agent ran on this machine and whose process is gone is failed at once, without waiting.

Database connections are checked before use and renewed every POOL_RECYCLE seconds (`pool_pre_ping`,
`pool_recycle`), so an agent whose trial ran for hours does not find its connection dropped by the server or a
firewall. `claim_lock` makes agents of one sweep take turns at reading the trials and claiming the next run (a
file lock beside a journal, an advisory lock on PostgreSQL): run_cap, grid points and de-duplicated points are
claimed atomically. Other databases go without it (trials.claim still re-checks run_cap after the fact).
"""
import copy
import fcntl
import hashlib
import importlib.util
import os
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy import text

from bddseg import config
from bddseg.cli import UserError

JOURNAL_NAME = "sweeps.journal"
MAX_RETRY = 2  # a trial whose agent died is re-run at most twice
POOL_RECYCLE = 1800  # seconds a database connection is used before it is replaced


def heartbeat_interval() -> int:
    """Seconds between heartbeats (BDDSEG_SWEEP_HEARTBEAT, default 10); stale after 3 intervals."""
    return max(1, int(os.environ.get("BDDSEG_SWEEP_HEARTBEAT", 10)))


def default_url() -> str:
    """The storage used without --storage: BDDSEG_SWEEP_STORAGE, else the journal under config.SWEEPS_DIR."""
    return os.environ.get("BDDSEG_SWEEP_STORAGE") or str(Path(config.SWEEPS_DIR) / JOURNAL_NAME)


def agent_tag() -> str:
    """host:pid of this agent, stored on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Requeue(RetryHeartbeatStaleTrialCallback):
    """A trial whose agent died is queued again with the same params (its run records stay on the failed one)."""

    def __call__(self, study, trial):
        trial = copy.copy(trial)
        trial.user_attrs = {}
        super().__call__(study, trial)


@contextmanager
def experimental_ok():
    """Optuna's heartbeat and retry API is marked experimental: no warning for each use of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def retry_callback():
    """What happens to a trial whose agent died: failed, and queued again (same params) for the next agent."""
    with experimental_ok():
        return Requeue(max_retry=MAX_RETRY)


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage plus heartbeats kept as touch-files beside the journal (mtime = last beat)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.beats = self.path.with_name(self.path.name + ".heartbeats")
        self.beats.mkdir(exist_ok=True)
        super().__init__(JournalFileBackend(str(self.path)))

    def record_heartbeat(self, trial_id: int) -> None:
        (self.beats / str(trial_id)).touch()

    def _get_stale_trial_ids(self, study_id: int) -> list:
        limit = time.time() - 3 * heartbeat_interval()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = self.beats / str(t._trial_id)
            if beat.exists() and beat.stat().st_mtime < limit:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self):
        return retry_callback()

    def __str__(self):
        return str(self.path)


def sqlalchemy_url(url: str) -> str:
    """postgresql:// and postgres:// use psycopg2 (installed) unless psycopg 3 is there (SQLAlchemy 2.1's default)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None:
        return f"postgresql+psycopg2://{rest}"
    return url


def get_storage(url=None):
    """A storage for a path (journal file) or an SQLAlchemy URL (anything with '://')."""
    url = str(url or default_url())
    if "://" not in url:
        return JournalHeartbeatStorage(Path(url).expanduser())
    url = sqlalchemy_url(url)
    if url.startswith("sqlite"):
        print("warning: SQLite with several agents at once fails with 'database is locked'; "
              "the default journal file is made for several local agents", flush=True)
    interval = heartbeat_interval()
    try:
        with experimental_ok():
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True, "pool_recycle": POOL_RECYCLE},
                              heartbeat_interval=interval,
                              grace_period=3 * interval, heartbeat_stale_trial_callback=retry_callback())
    except Exception as e:  # sqlalchemy / driver errors: report without the password
        raise UserError(f"cannot open sweep storage {describe(url)}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def lock_key(name: str) -> int:
    """A sweep's advisory-lock number (signed 64 bits, as PostgreSQL takes it)."""
    return int.from_bytes(hashlib.sha256(f"bddseg-sweep:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def claim_lock(storage, sweep_id: str):
    """Only one agent of the sweep at a time inside (journal: a lock file; PostgreSQL: an advisory lock).

    `study._storage` of an RDB study is Optuna's _CachedStorage around the RDBStorage: the lock goes on the latter.
    """
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    if isinstance(storage, JournalHeartbeatStorage):
        with open(storage.path.with_name(f"{storage.path.name}.claim-{sweep_id}.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(sweep_id)})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(sweep_id)})
                conn.commit()
    else:
        yield


def describe(storage) -> str:
    """A printable name for a storage or URL, with any password hidden."""
    url = getattr(storage, "url", None) or str(storage)
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        url = f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def record_heartbeat(storage, trial_id: int) -> None:
    """One heartbeat for a running trial (a no-op for storages without heartbeats)."""
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study) -> list:
    """Fail (and re-queue) running trials whose agent is gone: a dead local process, or a stale heartbeat."""
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = t.user_attrs.get("agent", "")
        agent_host, _, pid = tag.rpartition(":")
        if agent_host == host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                study._storage.set_trial_user_attr(t._trial_id, "error", f"agent {tag} died during the trial")
                if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    retry_callback()(study, study._storage.get_trial(t._trial_id))
                    failed.append(t.number)
            except UpdateFinishedTrialError:
                pass
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with experimental_ok():
        optuna.storages.fail_stale_trials(study)
    failed += sorted({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    return failed
