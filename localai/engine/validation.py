"""The create-job request checked against the spec's `CreateFineTuningJobRequest` schema.

Types, ranges and `auto` as `openapi.yaml` states them (hyperparameters under `method.<type>`
and the deprecated top-level `hyperparameters`), answered as OpenAI does: 400, the dotted
path of the field in `param`, and OpenAI's codes (`invalid_type`, `integer_below_min_value`,
...). The service is stricter than the schema in one place: an unknown hyperparameter name is
refused instead of ignored, so a typo cannot silently train with defaults.
"""

from __future__ import annotations

import math
from typing import Any

from localai.exceptions import InvalidRequest

METHODS = ("supervised", "dpo", "reinforcement")
SUPPORTED_METHODS = ("supervised", "dpo")


class Integer:
    """`auto`, or an integer in [minimum, maximum] (an integral JSON number such as 2.0 counts)."""

    def __init__(self, minimum: int, maximum: int, *, auto: bool = True) -> None:
        self.minimum, self.maximum, self.auto = minimum, maximum, auto

    def check(self, value: Any, param: str) -> int | str:
        if value == "auto" and self.auto:
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid_type(param, "an integer or 'auto'" if self.auto else "an integer", value)
        if value < self.minimum:
            raise out_of_range(param, "integer_below_min_value", f">= {self.minimum}", value)
        if value > self.maximum:
            raise out_of_range(param, "integer_above_max_value", f"<= {self.maximum}", value)
        return value


class Number:
    """`auto`, or a number greater than `above` and at most `maximum` (when given)."""

    def __init__(self, above: float, maximum: float | None = None) -> None:
        self.above, self.maximum = above, maximum

    def check(self, value: Any, param: str) -> float | str:
        if value == "auto":
            return value
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise invalid_type(param, "a number or 'auto'", value)
        if value <= self.above:
            raise out_of_range(param, "decimal_below_min_value", f"> {self.above:g}", value)
        if self.maximum is not None and value > self.maximum:
            raise out_of_range(param, "decimal_above_max_value", f"<= {self.maximum:g}", value)
        return value


# FineTuneSupervisedHyperparameters / FineTuneDPOHyperparameters in openapi.yaml.
SUPERVISED_HYPERPARAMETERS: dict[str, Integer | Number] = {
    "batch_size": Integer(1, 256),
    "learning_rate_multiplier": Number(above=0),
    "n_epochs": Integer(1, 50),
}
HYPERPARAMETERS = {
    "supervised": SUPERVISED_HYPERPARAMETERS,
    "dpo": {**SUPERVISED_HYPERPARAMETERS, "beta": Number(above=0, maximum=2)},
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def out_of_range(param: str, code: str, bound: str, value: Any) -> InvalidRequest:
    """OpenAI's wording, e.g. "Invalid 'n': integer below minimum value. Expected a value >= 1, ..."."""
    what = code.replace("_min_", " minimum ").replace("_max_", " maximum ").replace("_", " ")
    return InvalidRequest(
        f"Invalid '{param}': {what}. Expected a value {bound}, but got {value!r} instead.", param=param, code=code
    )


def _object(value: Any, param: str, *, nullable: bool = True) -> dict[str, Any]:
    if value is None and nullable:
        return {}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def _string(value: Any, param: str, *, required: bool = False, max_length: int | None = None) -> str | None:
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if required and not value:
        raise InvalidRequest(f"Invalid '{param}': empty string.", param=param, code="empty_string")
    if max_length is not None and not 1 <= len(value) <= max_length:
        raise InvalidRequest(
            f"Invalid '{param}': expected a string of 1 to {max_length} characters, but got {len(value)}.",
            param=param,
            code="string_above_max_length" if len(value) > max_length else "empty_string",
        )
    return value


def check_hyperparameters(value: Any, method: str, param: str) -> dict[str, Any]:
    """The hyperparameters object of a method, each value checked; unknown names refused."""
    hyper = _object(value, param)
    rules = HYPERPARAMETERS[method]
    checked = {}
    for name, given in hyper.items():
        if name not in rules:
            raise InvalidRequest(
                f"Unknown hyperparameter '{name}' for method '{method}'; expected one of {sorted(rules)}.",
                param=f"{param}.{name}",
                code="invalid_value",
            )
        checked[name] = rules[name].check(given, f"{param}.{name}")
    return checked


def check_metadata(value: Any) -> dict[str, str]:
    metadata = _object(value, "metadata")
    if len(metadata) > 16:
        raise InvalidRequest("Invalid 'metadata': at most 16 key-value pairs.", param="metadata", code="invalid_value")
    for key, item in metadata.items():
        if len(key) > 64:
            raise InvalidRequest(
                f"Invalid 'metadata': key {key[:16]!r}... is longer than 64 characters.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(item, str):
            raise invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > 512:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': values are at most 512 characters.", param=f"metadata.{key}"
            )
    return metadata


def check_create_job(body: Any) -> dict[str, Any]:
    """Return the create-job request with `method` resolved and its hyperparameters checked.

    The result has `method` as `{"type": t, t: {"hyperparameters": {...}}}`, the deprecated
    top-level hyperparameters merged under it (the method's own values win).
    """
    request = _object(body, "body", nullable=False)
    _string(request.get("model"), "model", required=True)
    _string(request.get("training_file"), "training_file", required=True)
    _string(request.get("validation_file"), "validation_file")
    _string(request.get("suffix"), "suffix", max_length=64)
    seed = request.get("seed")
    if seed is not None:
        seed = Integer(0, 2_147_483_647, auto=False).check(seed, "seed")
    integrations = request.get("integrations")
    if integrations is not None and (
        not isinstance(integrations, list) or not all(isinstance(i, dict) for i in integrations)
    ):
        raise invalid_type("integrations", "an array of objects", integrations)

    method = _object(request.get("method"), "method")
    kind = method.get("type", "supervised" if not method else None)
    if kind is None:
        raise missing("method.type")
    if kind not in METHODS:
        raise InvalidRequest(
            f"Invalid value for 'method.type': {kind!r}. Supported values are: 'supervised', 'dpo', "
            "and 'reinforcement'.",
            param="method.type",
            code="invalid_value",
        )
    if kind not in SUPPORTED_METHODS:
        raise InvalidRequest(
            f"method type '{kind}' is not supported by this service", param="method.type", code="invalid_value"
        )
    for other in METHODS:
        _object(method.get(other), f"method.{other}")  # a string here was a 500 once
    hyper = check_hyperparameters(request.get("hyperparameters"), kind, "hyperparameters")
    own = _object(method.get(kind), f"method.{kind}")
    hyper |= check_hyperparameters(own.get("hyperparameters"), kind, f"method.{kind}.hyperparameters")
    return {
        **request,
        "seed": seed,
        "metadata": check_metadata(request.get("metadata")) or None,
        "method": {"type": kind, kind: {"hyperparameters": hyper}},
    }
