"""A sweep's Optuna trials as the agent uses them: plain trial dicts for decide.py, atomic claims, records.

- `plain(study, space)`: the trials in decide.py's shape (trials skipped for run_cap are left out).
- `claim(study, space, params, trials, pins, run_cap)`: take the run decide.py proposed. A queued trial (a grid
  cell queued at creation, or a re-run of a dead agent's trial) is taken with an atomic WAITING -> RUNNING
  change in the storage, so across agents each runs exactly once; a new point becomes a new RUNNING trial,
  dropped (marked skipped) when other agents reached run_cap first. None when another agent was first.
- `Claim`: where one taken trial's attributes, metric reports, heartbeats and outcome go.
"""
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState, create_trial

from . import storage as st
from .decide import key

STATES = {TrialState.WAITING: "queued", TrialState.RUNNING: "running", TrialState.COMPLETE: "finished",
          TrialState.FAIL: "failed", TrialState.PRUNED: "stopped"}
OUTCOMES = {"finished": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "failed": TrialState.FAIL}


def retry_of(trial):
    """Number of the trial (its agent died) that this one runs again; None for a first attempt.

    What Optuna's RetryHeartbeatStaleTrialCallback.retried_trial_number reads, without its experimental warning.
    """
    return trial.system_attrs.get("failed_trial")


def records(trial) -> dict:
    """A trial's Optuna parameter records: what it was queued with (grid cell) and what it has set."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def decode(space, recorded: dict) -> dict:
    """Optuna records -> W&B values by flat name (names outside the space, or values it cannot hold, left out)."""
    out = {}
    for name, value in recorded.items():
        if name in space:
            try:
                out[name] = space[name].from_record(value)
            except ValueError:
                pass
    return out


def plain(study, space) -> list:
    """The sweep's trials in decide.py's shape, by trial number (id = trial number)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if "skipped" in t.user_attrs:
            continue
        history = [v for _, v in sorted(t.intermediate_values.items())]
        out.append({"id": t.number, "state": STATES[t.state], "params": decode(space, records(t)),
                    "history": history, "value": t.value if t.state == TrialState.COMPLETE else None,
                    "retry_of": retry_of(t)})
    return out


def fresh_rank(study, number: int) -> int:
    """How many first attempts (not re-runs) were created before trial `number`."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and retry_of(t) is None)


def claim(study, space, params: dict, trials: list, pins: dict, run_cap=None):
    """Take the run `params` (W&B values): pop the queued trial holding them, or create a new one; a Claim or None."""
    storage = study._storage
    wanted = key(params)
    waiting = next((t for t in trials if t["state"] == "queued" and key(t["params"]) == wanted), None)
    if waiting is not None:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, waiting["id"])
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return None
        except UpdateFinishedTrialError:
            return None
        frozen = storage.get_trial(trial_id)
        for name, record in records(frozen).items():  # the queued records, as they are (no re-encoding)
            if name in space and name not in frozen.params and name not in pins:
                d = space[name].distribution
                storage.set_trial_param(trial_id, name, d.to_internal_repr(record), d)
        return Claim(study, trial_id)
    searched = {n: p for n, p in space.searched.items() if n in params and n not in pins}
    template = create_trial(state=TrialState.RUNNING, params={n: p.to_record(params[n]) for n, p in searched.items()},
                            distributions={n: p.distribution for n, p in searched.items()})
    job = Claim(study, storage.create_new_trial(study._study_id, template_trial=template))
    if run_cap is not None and fresh_rank(study, job.number) >= run_cap:  # other agents got there first
        job.set(skipped="run_cap reached by other agents")
        job.finish("failed")
        return None
    return job


class Claim:
    """One RUNNING trial this agent has taken: its number, and the writes the agent makes on it."""

    def __init__(self, study, trial_id: int):
        self.study, self.id = study, trial_id
        self.number = study._storage.get_trial_number_from_id(trial_id)

    @property
    def frozen(self):
        return self.study._storage.get_trial(self.id)

    def set(self, **attrs):
        for name, value in attrs.items():
            self.study._storage.set_trial_user_attr(self.id, name, value)

    def report(self, step: int, value: float):
        self.study._storage.set_trial_intermediate_value(self.id, step, value)

    def beat(self):
        st.record_heartbeat(self.study._storage, self.id)

    def finish(self, outcome: str, value=None):
        """Record the outcome: 'finished' (with the final metric value), 'stopped' or 'failed'; False when the store
        already ended the trial (another agent failed it as stale, e.g. after a database outage)."""
        try:
            self.study.tell(self.number, value if outcome == "finished" else None, state=OUTCOMES[outcome])
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            return False
        return True

    def requeue(self):
        """Fail the trial and queue its params again for the next agent (this agent is stopping mid-trial)."""
        self.finish("failed")
        st.retry_callback()(self.study, self.frozen)
