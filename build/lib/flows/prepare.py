"""prepare: raw conversations -> validated, budgeted chat-format JSONL. Nothing is uploaded.

extract -> normalise -> per-example checks -> de-duplicate and split -> GX suites -> budget
-> report -> gates. A failing gate fails the run after the report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from ftflow.catalog import load_catalog
from ftflow.encodings import encoding_name_for_model
from ftflow.settings import DEFAULT_MODEL
from tasks.budget import estimate_budget
from tasks.extract import ExtractOptions, read_sources
from tasks.quality import DriftOptions, check_quality, validate_examples
from tasks.report import GateOptions, compute_totals, enforce_gates, suite_parameters, write_report
from tasks.transform import TransformOptions, normalize_conversations, split_dataset


@flow(name="prepare", flow_run_name="prepare-{model}", log_prints=True)
def prepare(
    sources: list[str],
    out_dir: str = ".ftflow/runs/latest",
    model: str = DEFAULT_MODEL,
    extract: ExtractOptions = ExtractOptions(),
    transform: TransformOptions = TransformOptions(),
    gates: GateOptions = GateOptions(),
    drift: DriftOptions = DriftOptions(),
) -> dict[str, Any]:
    """Return the report of a prepared dataset in out_dir (train/validation/rejected JSONL)."""
    out = Path(out_dir)
    work = out / "work"
    context = load_catalog().get(model).training_context
    encoding = encoding_name_for_model(model)

    extracted = read_sources(sources, extract, work)
    normalized = normalize_conversations(extracted.candidates_path, transform, work)
    validated = validate_examples(normalized.path, model, context, work)
    split = split_dataset(validated.valid_path, gates.validation_fraction, out, work)
    totals = compute_totals(extracted, validated, split)
    quality = check_quality(split.features_path, totals, suite_parameters(gates, context), out, drift)
    over_limit = validated.rejected.get("too_long", 0)
    budget = estimate_budget(split.features_path, model, encoding, over_limit, gates.n_epochs, gates.max_cost_usd)
    report = write_report(extracted, normalized, validated, split, quality, budget, out, work)
    enforce_gates(report)
    return report


if __name__ == "__main__":
    prepare(["data/raw/*"], out_dir=".ftflow/runs/prepare")
