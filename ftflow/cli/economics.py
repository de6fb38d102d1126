"""`ftflow economics`: the what-if cost case of a fine-tuned model against a base model with a long prompt."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ftflow.cli.output import console, print_table
from ftflow.cli.reporting import run_reporting_errors
from ftflow.formatting import count, usd
from ftflow.settings import get_settings


def economics(
    model: Annotated[str | None, typer.Option(help="Base model")] = None,
    prompt_tokens_before: Annotated[float, typer.Option(help="Prompt tokens per request, base + long prompt")] = 600,
    prompt_tokens_after: Annotated[float, typer.Option(help="Prompt tokens per request, fine-tuned")] = 60,
    completion_tokens: Annotated[float, typer.Option(help="Completion tokens per request")] = 150,
    trained_tokens: Annotated[int, typer.Option(help="Tokens the job trains (billing tokens)")] = 1_000_000,
    monthly_requests: Annotated[int, typer.Option(help="Requests per month")] = 100_000,
) -> None:
    """What-if cost case: fine-tuned model + short prompt against base model + long prompt."""
    from tasks.economics import cost_case

    case = run_reporting_errors(lambda: cost_case(
        model=get_settings(model=model).model, prompt_tokens_before=prompt_tokens_before,
        completion_tokens_before=completion_tokens, prompt_tokens_after=prompt_tokens_after,
        completion_tokens_after=completion_tokens, trained_tokens=trained_tokens, monthly_requests=monthly_requests))
    table = Table(title=f"cost case for {case.model} (prices as of {case.prices_as_of})", title_justify="left")
    table.add_column("", no_wrap=True)
    for column in ("base + long prompt", "fine-tuned + short prompt"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row("prompt tokens / request", count(case.prompt_tokens_before), count(case.prompt_tokens_after))
    table.add_row("completion tokens / request", count(case.completion_tokens_before),
                  count(case.completion_tokens_after))
    table.add_row("cost per 1K requests", usd(case.cost_per_1k_requests_before_usd, 4),
                  usd(case.cost_per_1k_requests_after_usd, 4))
    table.add_row(f"cost per month ({case.monthly_requests:,} requests)", usd(case.monthly_cost_before_usd),
                  usd(case.monthly_cost_after_usd))
    print_table(table)
    payback = (f"pays the training back in {case.payback_months} months" if case.payback_months is not None
               else "never pays the training back: per request it costs more")
    console.print(f"monthly saving {usd(case.monthly_saving_usd)}; training {usd(case.training_cost_usd)} "
                  f"({case.trained_tokens:,} tokens); {payback}", highlight=False)
