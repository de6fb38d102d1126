"""Economics: what the fine-tuned model costs and saves, from measured figures and dated prices.

Before: the base model with the long production prompt. After: the fine-tuned model with the
short prompt, at its higher price per token. Token figures are the means measured in the
evaluation (the API's `usage`), training cost is trained tokens x the training price.
When a model is promoted already, the case also says what the candidate costs against it (the
incumbent, at its own prices and measured tokens): the choice the promotion actually makes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import task

from ftflow.caching import RUN_CACHE
from ftflow.catalog import load_catalog
from ftflow.errors import ConfigError
from ftflow.formatting import change, usd
from tasks.evaluate import NOT_EVALUATED, prices_for


@dataclass
class CostCase:
    model: str
    prices_as_of: str
    monthly_requests: int
    prompt_tokens_before: float
    prompt_tokens_after: float
    prompt_token_reduction: float
    completion_tokens_before: float
    completion_tokens_after: float
    cost_per_1k_requests_before_usd: float
    cost_per_1k_requests_after_usd: float
    monthly_cost_before_usd: float
    monthly_cost_after_usd: float
    monthly_saving_usd: float  # negative: the fine-tuned model costs more per month
    trained_tokens: int
    training_cost_usd: float
    break_even_requests: int | None  # requests whose savings pay the training back; None: never
    payback_months: float | None
    incumbent_model: str | None = None  # the promoted model, if any, at its own prices
    cost_per_1k_requests_incumbent_usd: float | None = None
    monthly_saving_vs_incumbent_usd: float | None = None  # negative: the candidate costs more
    # The deployed model's hosting fee (Azure: per hour, idle or not), in monthly_cost_after_usd
    # and the saving; 0 where the backend charges none.
    hosting_usd_per_month: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_case(*, model: str, prompt_tokens_before: float, completion_tokens_before: float,
              prompt_tokens_after: float, completion_tokens_after: float, trained_tokens: int,
              monthly_requests: int, incumbent: tuple[str, float, float] | None = None,
              backend: str | None = None) -> CostCase:
    """The cost case; `incumbent`: the promoted model, its prompt and completion tokens per request.

    On a backend that charges for hosting, the deployment's monthly fee counts against the saving
    over the base model (not against the incumbent, which is deployed too).

    Raises ConfigError for a negative count (a what-if typed by hand): it would price a request below zero.
    """
    counts = {"prompt tokens before": prompt_tokens_before, "completion tokens before": completion_tokens_before,
              "prompt tokens after": prompt_tokens_after, "completion tokens after": completion_tokens_after,
              "trained tokens": trained_tokens, "monthly requests": monthly_requests}
    negative = [f"{name} {value:g}" for name, value in counts.items() if value < 0]
    if negative:
        raise ConfigError(f"token and request counts cannot be negative: {', '.join(negative)}")
    catalog = load_catalog()
    info = catalog.get(model)
    hosting = catalog.hosting_of(backend)
    hosting_per_month = hosting.usd_per_month if hosting else 0.0
    per_request_before = (prompt_tokens_before * info.base_input + completion_tokens_before * info.base_output) / 1e6
    per_request_after = (prompt_tokens_after * info.finetuned_input
                         + completion_tokens_after * info.finetuned_output) / 1e6
    saving_per_request = per_request_before - per_request_after
    training_cost = trained_tokens * info.training / 1e6
    monthly_saving = saving_per_request * monthly_requests - hosting_per_month
    against: dict[str, Any] = {}
    if incumbent:
        name, prompt_tokens, completion_tokens = incumbent
        price_in, price_out = prices_for(name)
        per_request_incumbent = (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
        against = {"incumbent_model": name,
                   "cost_per_1k_requests_incumbent_usd": round(per_request_incumbent * 1000, 6),
                   "monthly_saving_vs_incumbent_usd": round((per_request_incumbent - per_request_after)
                                                            * monthly_requests, 4)}
    return CostCase(
        model=info.name, prices_as_of=catalog.as_of, monthly_requests=monthly_requests,
        prompt_tokens_before=prompt_tokens_before, prompt_tokens_after=prompt_tokens_after,
        prompt_token_reduction=(round(1 - prompt_tokens_after / prompt_tokens_before, 4)
                                if prompt_tokens_before else 0.0),
        completion_tokens_before=completion_tokens_before, completion_tokens_after=completion_tokens_after,
        cost_per_1k_requests_before_usd=round(per_request_before * 1000, 6),
        cost_per_1k_requests_after_usd=round(per_request_after * 1000, 6),
        monthly_cost_before_usd=round(per_request_before * monthly_requests, 4),
        monthly_cost_after_usd=round(per_request_after * monthly_requests + hosting_per_month, 4),
        monthly_saving_usd=round(monthly_saving, 4),
        trained_tokens=trained_tokens, training_cost_usd=round(training_cost, 4),
        break_even_requests=int(-(-training_cost // saving_per_request)) if saving_per_request > 0 else None,
        payback_months=round(training_cost / monthly_saving, 3) if monthly_saving > 0 else None,
        **against,
        hosting_usd_per_month=hosting_per_month,
    )


def cost_case_markdown(case: CostCase) -> str:
    verdict = (f"pays back the training in {case.payback_months} months" if case.payback_months is not None
               else "never pays back: per request it costs more than the base model with the long prompt")
    rows = [
        ("prompt tokens / request", f"{case.prompt_tokens_before:.1f}", f"{case.prompt_tokens_after:.1f}"),
        ("completion tokens / request", f"{case.completion_tokens_before:.1f}", f"{case.completion_tokens_after:.1f}"),
        ("cost per 1K requests", usd(case.cost_per_1k_requests_before_usd, 4),
         usd(case.cost_per_1k_requests_after_usd, 4)),
        (f"cost per month ({case.monthly_requests:,} requests)", usd(case.monthly_cost_before_usd),
         usd(case.monthly_cost_after_usd)),
        *([("of it: hosting the deployed model", "-", usd(case.hosting_usd_per_month))]
          if case.hosting_usd_per_month else []),
    ]
    return "\n".join([
        f"# Cost case for {case.model} (prices as of {case.prices_as_of})", "",
        "| | before (base + long prompt) | after (fine-tuned + short prompt) |", "|---|---|---|",
        *[f"| {name} | {before} | {after} |" for name, before, after in rows],
        "", f"Prompt tokens per request {change(-case.prompt_token_reduction)}; monthly saving "
        f"{usd(case.monthly_saving_usd)}; training {usd(case.training_cost_usd, 4)} ({case.trained_tokens:,} tokens); "
        f"{verdict}.",
        *([] if case.incumbent_model is None else [
            "", f"Against the promoted `{case.incumbent_model}`: {usd(case.cost_per_1k_requests_incumbent_usd, 4)} "
            f"per 1K requests, monthly saving {usd(case.monthly_saving_vs_incumbent_usd)}."]),
    ])


@task(name="compute-cost-case", cache_policy=RUN_CACHE)
def compute_cost_case(evaluation: dict[str, Any], trained_tokens: int, model: str,
                      monthly_requests: int, backend: str | None = None) -> CostCase | None:
    """Return the cost case from the evaluation's measured token usage (also as an artifact); None unmeasured."""
    from prefect.artifacts import create_markdown_artifact

    if evaluation["status"] == NOT_EVALUATED:
        return None
    before, after = evaluation["models"]["baseline"], evaluation["models"]["candidate"]
    current = evaluation["models"].get("current")
    case = cost_case(model=model, prompt_tokens_before=before["prompt_tokens_mean"],
                     completion_tokens_before=before["completion_tokens_mean"],
                     prompt_tokens_after=after["prompt_tokens_mean"],
                     completion_tokens_after=after["completion_tokens_mean"], trained_tokens=trained_tokens,
                     monthly_requests=monthly_requests,
                     incumbent=current and (current["model"], current["prompt_tokens_mean"],
                                            current["completion_tokens_mean"]),
                     backend=backend)
    create_markdown_artifact(cost_case_markdown(case), key="ftflow-cost-case",
                             description="Fine-tuned + short prompt vs base + long prompt")
    return case
