"""One training run's life as a context manager: W&B init, the run folder and its record, checkpoint saves, the end.

    with TrainingRun(args, project) as run:     # W&B run (offline without a key); SIGTERM -> KeyboardInterrupt
        run.set_up(derived, info)               # config.json, meta for checkpoints, the run folder
        ... fit with run.save as the best-checkpoint hook ...
        run.done(best, epochs_run, final)       # status 'finished'
    sys.exit(run.exit_code)

A notebook drives the same steps by hand: `run = TrainingRun(args, project).start()`, ..., `run.finish()`.
On the way out, whatever happened: summary.json, the model artifact (finished runs only, see model_artifact.py),
one summary line on stderr, a W&B alert (online, runs started by hand only: never one per sweep trial),
`run.finish(exit_code)`. Exit codes: 0 finished, or stopped by SIGTERM (how `wandb agent` and sweep.py stop a
trial early: a normal end, status 'stopped', not a failed run); 1 failed or diverged (a non-finite loss, said in
one line); 2 bad input; 130 Ctrl-C.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

from bddseg import config
from bddseg.atomic import write_json
from bddseg.checkpoint import META, save_run_checkpoint
from bddseg.cli import UserError
from bddseg.lineage import TRAIN_IMAGES, train_images
from bddseg.model_artifact import log_model
from bddseg.precision import NonFiniteLoss
from bddseg.wb import init_wandb, is_online, where_logged

META_KEYS = ("img_size", "frame_size", "dataset", "data_path", "data_artifact", "data_manifest_sha256", "run_name",
             "project")
SWEEP_ENVS = ("WANDB_SWEEP_ID", "BDDSEG_SWEEP_ID")  # set for trials by `wandb agent` and by sweep.py


def _sigterm(signum, frame):
    """SIGTERM (how sweep agents stop pruned trials) unwinds like Ctrl-C; TrainingRun records it as 'stopped'."""
    raise KeyboardInterrupt("SIGTERM")


def in_sweep(run) -> bool:
    """True for a sweep trial (W&B's run.sweep_id, or the agents' environment variables)."""
    return bool(getattr(run, "sweep_id", None) or any(os.environ.get(v) for v in SWEEP_ENVS))


class TrainingRun:
    """A training run from wandb.init to run.finish: its status, run folder, checkpoint meta and exit code."""

    def __init__(self, args, project):
        self.args, self.project = args, project
        self.status, self.exit_code, self.dir, self.meta = "failed", 1, None, {}
        self.best_epoch = self.best_metrics = None
        self.final, self.summary = {}, {}

    def start(self):
        """wandb.init (offline without an API key); `config` is the run's config, where sweep values win."""
        self.t0 = time.time()
        self.wandb = init_wandb(project=self.project, job_type="training", config=vars(self.args))
        self.config = self.wandb.config
        return self

    def __enter__(self):
        signal.signal(signal.SIGTERM, _sigterm)
        try:
            return self.start()
        except KeyboardInterrupt as e:  # stopped while wandb.init ran: no run to record, an ordinary stop all the same
            print("train stopped before the run started", file=sys.stderr)
            sys.exit(0 if str(e) == "SIGTERM" else 130)

    def set_up(self, derived: dict, info: dict) -> Path:
        """Record what the run worked out (into the config and config.json), and which images it trains on
        (train_images.json, for eval's overlap check); create the run folder."""
        self.config.update(derived, allow_val_change=True)
        self.wandb.name, self.dir = self.config.run_name, Path(self.config.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        run_config = dict(self.config.items())
        write_json(self.dir / "config.json", run_config)
        write_json(self.dir / TRAIN_IMAGES, train_images(run_config["data_path"]))
        self.meta = {"arch": run_config["arch"], "n_classes": len(config.BDD_CLASSES),
                     "classes": {str(k): v for k, v in config.BDD_CLASSES.items()}, "ignore_index": config.IGNORE,
                     **{k: run_config[k] for k in META_KEYS}, "run_id": self.wandb.id, "model_info": info,
                     "config": run_config}
        return self.dir

    def record(self, values: dict):
        """Add what the run decided while training (e.g. --crop auto's pick) to its config: config.json, and the
        meta.json of a checkpoint already saved."""
        self.config.update(values, allow_val_change=True)
        self.meta["config"] = run_config = dict(self.config.items())
        write_json(self.dir / "config.json", run_config)
        if (self.dir / META).exists():
            write_json(self.dir / META, {**json.loads((self.dir / META).read_text()), "config": run_config})

    def save(self, model, metrics, epoch):
        """Save a best-so-far checkpoint (atomically, keeping the record files beside it)."""
        self.meta.update(metrics=metrics, epoch=epoch)
        save_run_checkpoint(self.dir, model, self.meta)

    def done(self, best, epochs_run, final: dict):
        """The fit ended normally: final metrics into the W&B summary, status finished."""
        self.best_epoch, self.best_metrics, self.final = best.best_epoch, best.best_metrics, final
        self.wandb.summary.update({**final, "best_epoch": best.best_epoch, "epochs_run": epochs_run})
        self.status, self.exit_code = "finished", 0

    def __exit__(self, exc_type, exc, tb):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop that arrives while the run is recorded waits for it
        if exc_type is KeyboardInterrupt:
            self.status, self.exit_code = ("stopped", 0) if str(exc) == "SIGTERM" else ("interrupted", 130)
        elif exc_type is NonFiniteLoss:
            print(f"error: {exc.message}", file=sys.stderr)
            self.status, self.exit_code = "diverged", 1
        elif exc_type is UserError:
            self.status, self.exit_code = "bad input", 2
        self.finish()
        return exc_type in (KeyboardInterrupt, NonFiniteLoss)  # both end in sys.exit(exit_code), not a traceback

    def finish(self):
        """summary.json, the model artifact (when finished), the one-line summary, an alert when online, run.finish."""
        self.summary = {"status": self.status, "run_id": self.wandb.id, "run_name": self.wandb.name,
                        "run_dir": str(self.dir), "seconds": round(time.time() - self.t0, 1),
                        "best_epoch": self.best_epoch, "best_metrics": self.best_metrics, **self.final}
        self.wandb.summary["status"] = self.status
        if self.dir is not None and self.dir.exists():
            write_json(self.dir / "summary.json", self.summary)
            if self.status == "finished":  # the artifact holds summary.json as above; the aliases are added after
                self.summary["model_aliases"] = self.log_model()
                write_json(self.dir / "summary.json", self.summary)
        line = self.one_line()
        print(line, file=sys.stderr)
        if is_online(self.wandb) and not in_sweep(self.wandb):
            import wandb
            wandb.alert(title=f"train {self.status}: {self.wandb.name}", text=line,
                        level=wandb.AlertLevel.INFO if self.status == "finished" else wandb.AlertLevel.WARN)
        self.wandb.finish(exit_code=self.exit_code)

    def log_model(self):
        """The model artifact (model_artifact.log_model); a W&B failure is one warning line, not a failed run."""
        try:
            return log_model(self.wandb, self.dir, self.meta, getattr(self.args, "registry", None))
        except Exception as e:
            print(f"warning: the model artifact was not logged ({type(e).__name__}: {e}); the checkpoint is in "
                  f"{self.dir}", file=sys.stderr)
            return None

    def one_line(self) -> str:
        """'train finished: <name> (<id>) best miou 0.41 @ epoch 7, 312 s -> <dir>; W&B offline: ...'."""
        s = self.summary
        miou = (s.get("best_metrics") or {}).get("miou")
        score = f"best miou {miou:.4f} @ epoch {s['best_epoch']}" if miou is not None else "no checkpoint"
        return f"train {s['status']}: {s['run_name']} ({s['run_id']}) {score}, {s['seconds']} s -> {s['run_dir']}; " \
               f"W&B {where_logged(self.wandb)}"
