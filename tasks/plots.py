"""Plots of a retrain run: PNGs in the run folder, shown in the Prefect UI as artifacts.

Rendered with matplotlib's Agg backend (no display, no GUI toolkit). The UI cannot read the
run folder, so each plot's artifact embeds its PNG as a `data:` URL. A markdown artifact, not
an image artifact: the UI prints an image artifact's URL under the picture, and a data URL
is a 70,000-character line running over the page.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ftflow.catalog import short_model

SIZE = (7.0, 3.6)
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def plot_loss(curve: list[dict[str, Any]], path: Path, title: str = "Training and validation loss") -> Path:
    """Training and validation loss per step (rows of the job's step metrics)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    for column, label in (("train_loss", "training loss"), ("valid_loss", "validation loss")):
        points = [(row["step"], row[column]) for row in curve if row.get(column) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=label, marker="o" if column == "valid_loss" and len(points) < 30 else None)
    ax.set(title=title, xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_token_histogram(tokens: list[int], path: Path, limit: int | None = None,
                         title: str = "Tokens per training example") -> Path:
    """Histogram of the examples' token counts, with the model's context limit if it is in view."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    ax.hist(tokens, bins=min(40, max(5, len(set(tokens)))), color="#4c72b0")
    if limit and tokens and limit <= 1.5 * max(tokens):
        ax.axvline(limit, color="#c44e52", linestyle="--", label=f"context limit {limit:,}")
        ax.legend()
    ax.set(title=title, xlabel="tokens", ylabel="examples")
    ax.grid(alpha=0.3)
    return _save(fig, path)


HISTORY_METRICS = (("f1", "F1"), ("fact_recall", "fact recall"), ("json_valid_rate", "valid JSON"),
                   ("language_rate", "in language"))


def history_label(run: dict[str, Any]) -> str:
    """A run on the x axis: its id (start time and flow-run id, never shared) and its base model."""
    return f"{run['run_id']}\n{short_model(run.get('base_model'))}"


def plot_eval_history(runs: list[dict[str, Any]], path: Path, title: str = "Held-out evaluation, run over run") -> Path:
    """The candidate's F1 and rates per run (oldest left), with 95% intervals where the run has them."""
    plt = _pyplot()
    evaluated = [r for r in runs if (r.get("evaluation") or {}).get("candidate")]
    fig, ax = plt.subplots(figsize=SIZE)
    labels = [history_label(r) for r in evaluated]
    for offset, (metric, label) in zip((-0.225, -0.075, 0.075, 0.225), HISTORY_METRICS, strict=True):
        xs, ys, errors = [], [], [[], []]
        for i, run in enumerate(evaluated):
            model = run["evaluation"]["candidate"]
            if model.get(metric) is None:
                continue
            interval = (model.get("ci95") or {}).get(metric) or [model[metric], model[metric]]
            xs.append(i + offset)
            ys.append(model[metric])
            errors[0].append(max(0.0, model[metric] - interval[0]))
            errors[1].append(max(0.0, interval[1] - model[metric]))
        if xs:
            ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=label)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set(title=title, ylabel="share / score", ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    if evaluated:
        ax.legend(loc="lower left")
    return _save(fig, path)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@task(name="draw-plots", cache_policy=NO_CACHE)
def draw_plots(record: dict[str, Any], history: list[dict[str, Any]], run_dir: str) -> dict[str, str]:
    """Return the plots drawn for this run (name -> PNG path); each is also an artifact `ftflow-plot-<name>`."""
    import pandas as pd
    from prefect.artifacts import create_markdown_artifact

    out = Path(run_dir) / "plots"
    prepare = record.get("prepare") or {}
    plots: dict[str, Path] = {}
    features = Path(prepare.get("files", {}).get("features.parquet", ""))
    if features.is_file():
        tokens = pd.read_parquet(features, columns=["split", "tokens"])
        plots["tokens"] = plot_token_histogram(tokens.loc[tokens["split"] == "train", "tokens"].tolist(),
                                               out / "tokens.png", prepare.get("training_context"))
    curve = (record.get("training_metrics") or {}).get("curve")
    if curve:
        plots["loss"] = plot_loss(curve, out / "loss.png")
    if any((r.get("evaluation") or {}).get("candidate") for r in history):
        plots["eval-history"] = plot_eval_history(history, out / "eval-history.png")
    descriptions = {"tokens": "Tokens per training example", "loss": "Training and validation loss per step",
                    "eval-history": "Held-out F1, fact recall, valid-JSON and language rates, run over run "
                                    "(95% intervals)"}
    for name, path in plots.items():
        create_markdown_artifact(f"![{descriptions[name]}]({data_url(path)})", key=f"ftflow-plot-{name}",
                                 description=descriptions[name])
    return {name: str(path) for name, path in plots.items()}
