"""Which deployments stay, which go, and what hosting costs (pure; the Azure flow is in test_providers_e2e)."""

from __future__ import annotations

import pytest

from ftflow.catalog import load_catalog
from tasks.economics import cost_case
from tasks.hosting import backend_of_identity, kept_models, stale_deployments

BASE = "gpt-4o-mini-2024-07-18"


def promoted(*models: str, base: str = BASE) -> list[dict]:
    return [{"model": m, "base_model": base} for m in models]  # newest first


def test_the_promoted_and_the_previous_promoted_model_are_kept_per_base_model():
    rows = promoted("m3", "m2", "m1") + promoted("x2", "x1", base="gpt-4.1-2025-04-14")
    assert kept_models(rows, 2) == {"m3": "promoted", "m2": "previous promoted", "x2": "promoted",
                                    "x1": "previous promoted"}
    assert kept_models(rows, 1) == {"m3": "promoted", "x2": "promoted"}
    assert kept_models(rows, 3)["m1"] == "promoted 3 ago"


def test_stale_deployments_are_ftflows_others_of_ended_runs():
    deployed = [{"model": m, "deployment": f"d-{m}"} for m in ("m1", "m2", "m3", "c4", "c5")]
    # m1 was promoted before m2 and m3; c4 a candidate that was not promoted; c5 of a run still evaluating.
    stale = stale_deployments(deployed, promoted("m3", "m2", "m1"), 2, ended={"m1", "m2", "m3", "c4"})
    assert [d["deployment"] for d in stale] == ["d-m1", "d-c4"]


def test_hosting_is_in_the_dated_price_table_and_counts_against_the_saving():
    hosting = load_catalog().hosting_of("azure")
    assert hosting is not None and hosting.usd_per_hour == 1.70 and hosting.usd_per_month == 1241.0
    assert hosting.as_of and "fine-tuning-cost-management" in hosting.source
    assert load_catalog().hosting_of("openai") is None and load_catalog().hosting_of("local") is None
    figures = {"model": BASE, "prompt_tokens_before": 800, "completion_tokens_before": 100, "prompt_tokens_after": 80,
               "completion_tokens_after": 100, "trained_tokens": 100_000, "monthly_requests": 100_000}
    plain, azure = cost_case(**figures), cost_case(**figures, backend="azure")
    assert plain.hosting_usd_per_month == 0.0 and azure.hosting_usd_per_month == 1241.0
    assert azure.monthly_cost_after_usd == pytest.approx(plain.monthly_cost_after_usd + 1241.0)
    assert azure.monthly_saving_usd == pytest.approx(plain.monthly_saving_usd - 1241.0)
    assert plain.payback_months is not None and azure.payback_months is None  # hosting eats the saving


@pytest.mark.parametrize("identity, backend", [("azure-v1:http://x/openai/v1/", "azure"),
                                               ("azure-dated:http://x/openai/", "azure"), ("local:/tmp/s", "local")])
def test_backend_of_identity(identity, backend):
    assert backend_of_identity(identity) == backend
