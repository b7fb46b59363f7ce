"""One training run's life as a context manager: W&B init, the run folder and its record, checkpoint saves, the end.

    with TrainingRun(args, project) as run:     # W&B run (offline without a key); SIGTERM -> KeyboardInterrupt
        run.set_up(derived, info)               # config.json, meta for checkpoints, the run folder
        ... fit with run.save as the best-checkpoint hook ...
        run.done(best, epochs_run, final)       # status 'finished'
    sys.exit(run.exit_code)

A notebook drives the same steps by hand: `run = TrainingRun(args, project).start()`, ..., `run.finish()`.
On the way out, whatever happened: summary.json, the model artifact (finished runs only), one summary line on
stderr, a W&B alert when online, `run.finish(exit_code)`. Exit codes: 0 finished, 1 failed or diverged (a
non-finite loss, said in one line), 2 bad input, 130 Ctrl-C, 143 SIGTERM (how sweep agents stop a trial).
"""
import signal
import sys
import time
from pathlib import Path

from bddseg import config
from bddseg.atomic import write_json
from bddseg.checkpoint import save_run_checkpoint
from bddseg.cli import UserError
from bddseg.precision import NonFiniteLoss
from bddseg.wb import init_wandb, is_online, where_logged

META_KEYS = ("img_size", "frame_size", "dataset", "data_path", "run_name", "project")
ARTIFACT_KEYS = ("arch", "img_size", "dataset", "epoch", "metrics", "run_name")


def _sigterm(signum, frame):
    """SIGTERM (how sweep agents stop pruned trials) takes the Ctrl-C path."""
    raise KeyboardInterrupt("SIGTERM")


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
        return self.start()

    def set_up(self, derived: dict, info: dict) -> Path:
        """Record what the run worked out (into the config and config.json) and create its folder."""
        self.config.update(derived, allow_val_change=True)
        self.wandb.name, self.dir = self.config.run_name, Path(self.config.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        run_config = dict(self.config.items())
        write_json(self.dir / "config.json", run_config)
        self.meta = {"arch": run_config["arch"], "n_classes": len(config.BDD_CLASSES),
                     "classes": {str(k): v for k, v in config.BDD_CLASSES.items()}, "ignore_index": config.IGNORE,
                     **{k: run_config[k] for k in META_KEYS}, "run_id": self.wandb.id, "model_info": info,
                     "config": run_config}
        return self.dir

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
        if exc_type is KeyboardInterrupt:
            self.status, self.exit_code = "interrupted", 143 if str(exc) == "SIGTERM" else 130
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
        if self.dir is not None and self.dir.exists():
            write_json(self.dir / "summary.json", self.summary)
            if self.status == "finished":
                self.log_model()
        line = self.one_line()
        print(line, file=sys.stderr)
        if is_online(self.wandb):
            import wandb
            wandb.alert(title=f"train {self.status}: {self.wandb.name}", text=line,
                        level=wandb.AlertLevel.INFO if self.status == "finished" else wandb.AlertLevel.WARN)
        self.wandb.finish(exit_code=self.exit_code)

    def log_model(self):
        """The run folder as a W&B model artifact (aliases best, latest); works offline (synced later)."""
        import wandb
        art = wandb.Artifact(self.dir.name, type="model",
                             metadata={k: self.meta[k] for k in ARTIFACT_KEYS if k in self.meta})
        art.add_dir(str(self.dir))
        self.wandb.log_artifact(art, aliases=["best", "latest"])

    def one_line(self) -> str:
        """'train finished: <name> (<id>) best miou 0.41 @ epoch 7, 312 s -> <dir>; W&B offline: ...'."""
        s = self.summary
        miou = (s.get("best_metrics") or {}).get("miou")
        score = f"best miou {miou:.4f} @ epoch {s['best_epoch']}" if miou is not None else "no checkpoint"
        return f"train {s['status']}: {s['run_name']} ({s['run_id']}) {score}, {s['seconds']} s -> {s['run_dir']}; " \
               f"W&B {where_logged(self.wandb)}"
