"""A sweep's report as one self-contained HTML page (plotly.js inline: works offline, opens in any browser).

What the W&B sweep page shows: metric over time, parallel coordinates, parameter importance and correlation
with the metric, per-categorical mean/max, the table of trials, and the best trial's exact command line.
"""
import html
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

from bddseg import config as project
from bddseg.atomic import atomic_write

from .study import best, trials_frame

META = {"trial", "state", "value", "reports", "duration_s", "start", "error", "run_dir", "command"}


def reports_dir() -> Path:
    """Default folder for reports: config.REPORTS_DIR (BDDSEG_REPORTS, else reports/ at the project root)."""
    return Path(project.REPORTS_DIR)


def default_path(sweep_id: str) -> Path:
    return reports_dir() / f"sweep-{sweep_id}.html"


class Page:
    """HTML sections; the first plotly figure carries plotly.js inline, the others reuse it."""

    def __init__(self):
        self.parts, self.js_done = [], False

    def add(self, text: str):
        self.parts.append(text)

    def heading(self, text: str):
        self.add(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str):
        self.add(f"<p class='note'>{html.escape(text)}</p>")

    def figure(self, make, what: str):
        try:
            fig = make()
        except Exception as e:  # too few trials, a single value, ...: say so instead of failing the report
            self.note(f"{what}: not available ({type(e).__name__}: {e})")
            return
        fig.update_layout(margin=dict(l=40, r=20, t=40, b=40), height=420)
        self.add(fig.to_html(full_html=False, include_plotlyjs=not self.js_done))
        self.js_done = True

    def table(self, df: pd.DataFrame):
        df = df.astype(object).where(df.notna(), "")
        self.add(df.to_html(index=False, escape=True, border=0, classes="t", float_format="{:.4g}".format))


def categorical_params(df: pd.DataFrame) -> list:
    """Parameters worth a per-value table: non-numeric ones, and numeric ones with at most 8 distinct values."""
    out = []
    for c in df.columns:
        if c in META:
            continue
        values = df[c].dropna().map(str)
        if 1 < values.nunique() <= (20 if not pd.api.types.is_numeric_dtype(df[c]) else 8):
            out.append(c)
    return out


def per_value(df: pd.DataFrame, param: str) -> pd.DataFrame:
    """count, mean, max and min of the metric per value of one parameter (finished trials)."""
    g = df.assign(**{param: df[param].map(str)}).groupby(param)["value"]
    return g.agg(["count", "mean", "max", "min"]).reset_index().sort_values("mean", ascending=False)


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of each parameter with the metric (categoricals one-hot per value, like W&B)."""
    rows = []
    for c in df.columns:
        if c in META or df[c].dropna().map(str).nunique() < 2:
            continue
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            rows.append((c, col.astype(float).corr(df["value"])))
        else:
            for v in sorted(col.dropna().map(str).unique()):
                rows.append((f"{c}={v}", (col.map(str) == v).astype(float).corr(df["value"])))
    out = pd.DataFrame(rows, columns=["parameter", "correlation"])
    return out.dropna().sort_values("correlation", key=np.abs, ascending=False)


def importances(study) -> pd.DataFrame:
    """Optuna's fANOVA importance of each searched parameter (needs a few finished trials)."""
    imp = optuna.importance.get_param_importances(study)
    return pd.DataFrame({"parameter": list(imp), "importance": [round(v, 4) for v in imp.values()]})


def build(study, config: dict) -> str:
    """The report page for a study and its sweep config."""
    vis = optuna.visualization
    metric = config["metric"]["name"]
    df = trials_frame(study)
    done = df[df["state"] == "COMPLETE"] if len(df) else df
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    page = Page()
    title = f"Sweep {study.study_name}" + (f" · {config['name']}" if config.get("name") else "")
    page.add(f"<h1>{html.escape(title)}</h1>")
    if config.get("description"):
        page.add(f"<p>{html.escape(config['description'])}</p>")
    goal = config["metric"].get("goal", "minimize")
    page.add(f"<p><b>{html.escape(config['method'])}</b> search, {html.escape(goal)} "
             f"<b>{html.escape(metric)}</b>; trials: "
             + html.escape(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none") + "</p>")

    page.heading("Best trial")
    b = best(study)
    if b is None:
        page.note("No finished trial yet.")
    else:
        page.add(f"<p>trial {b.number}: <b>{html.escape(metric)} = {b.value:.4g}</b>"
                 + (f" · run folder <code>{html.escape(str(b.user_attrs['run_dir']))}</code>"
                    if b.user_attrs.get("run_dir") else "") + "</p>")
        page.add("<p>Rerun it (change e.g. <code>--img_size</code> for a larger run):</p>"
                 f"<pre class='cmd'>{html.escape(b.user_attrs.get('command', ''))}</pre>")

    page.heading(f"{metric} over time")
    page.figure(lambda: vis.plot_optimization_history(study, target_name=metric), "history")
    page.figure(lambda: vis.plot_intermediate_values(study).update_layout(
        xaxis_title="metric report (step)", yaxis_title=metric), "per-trial curves")

    page.heading("Parallel coordinates")
    page.figure(lambda: vis.plot_parallel_coordinate(study, target_name=metric), "parallel coordinates")

    page.heading(f"Parameter importance and correlation with {metric}")
    try:
        page.table(importances(study))
    except Exception as e:
        page.note(f"importance: not available ({type(e).__name__}: {e})")
    if len(done) >= 2:
        page.table(correlations(done).round(3))
    page.figure(lambda: vis.plot_slice(study, target_name=metric), "slices")

    page.heading(f"{metric} per value")
    for param in categorical_params(done) if len(done) else []:
        page.add(f"<h3>{html.escape(param)}</h3>")
        page.table(per_value(done, param))

    page.heading("Trials")
    if len(df):
        shown = df.drop(columns=["command"]).rename(columns={"value": metric})
        shown["start"] = shown["start"].map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if pd.notna(d) else "")
        page.table(shown)
    page.heading("Sweep config")
    page.add(f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    return TEMPLATE.format(title=html.escape(title), body="\n".join(page.parts))


def write_report(study, config: dict, path=None) -> Path:
    """Write the report atomically; returns its path."""
    path = Path(path) if path else default_path(study.study_name)
    return atomic_write(path, build(study, config))


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table.t {{ border-collapse: collapse; font-size: 13px; margin: .5em 0 1.5em; }}
table.t th, table.t td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
pre {{ background: #f6f6f6; padding: .8em; overflow-x: auto; }}
pre.cmd {{ white-space: pre-wrap; word-break: break-all; }}
.note {{ color: #777; }}
</style></head><body>
{body}
</body></html>
"""

