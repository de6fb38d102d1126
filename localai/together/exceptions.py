"""Together's errors: `{"error": {"message", "type", "param", "code"}}` (OpenAI-compatible).

The `together` SDK (Stainless) maps the status code to its exception class
(BadRequestError, NotFoundError, RateLimitError, ...) and keeps the body.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from localai.exceptions import APIError


class TogetherError(APIError):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status


def unsupported_model(model: str) -> TogetherError:
    return TogetherError(
        400,
        f"The model {model} is not supported for fine-tuning. See https://docs.together.ai/docs/fine-tuning-models "
        "for the models that are.",
        code="model_not_supported",
        param="model",
    )


def model_not_available(model: str) -> TogetherError:
    return TogetherError(
        404,
        f"Unable to access model {model}. Please visit https://api.together.ai/models to view the list of "
        "supported models.",
        code="model_not_available",
        param="model",
    )


@contextmanager
def together_errors() -> Iterator[None]:
    """Errors of the shared engine keep their status and wording; only the class changes."""
    try:
        yield
    except TogetherError:
        raise
    except APIError as error:
        raise TogetherError(error.status, error.message, code=error.code, param=error.param) from None
