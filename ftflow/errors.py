"""The exceptions ftflow raises, grouped by cause so callers catch at the level they need.

    FtflowError                      every error of ours
    ├── ConfigError                  a setting, option or model name that cannot work
    ├── InputError                   a source that cannot be read at all (missing, wrong format)
    ├── ShardFailed                  one shard of the input could not be prepared (names the shard)
    ├── DataError                    the data was read but must not go further
    │   ├── QualityGateFailed        a Great Expectations suite failed
    │   └── BudgetExceeded           the estimated training cost is over --max-cost-usd
    └── ProviderError                the fine-tuning provider said no or went wrong
        ├── ProviderRefused          fine-tuning is not allowed (account, model, quota)
        ├── UploadRejected           the provider could not process an uploaded file
        ├── JobFailed                the fine-tuning job ended in `failed`
        ├── JobCancelled             the fine-tuning job ended in `cancelled`
        └── JobTimeout               polling ran past its deadline

Bad records are not errors: they go to `rejected.jsonl` with a reason (see docs/rejections.md).
The CLI maps each class to an exit code and prints its message on one line.
"""

from __future__ import annotations


def usd(amount: float) -> str:
    """Dollars with cents, or with as many decimals as it takes not to show a small amount as $0.00."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.6f}".rstrip("0")


class FtflowError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(FtflowError):
    """Raised when a setting, CLI option or model name cannot work."""

    exit_code = 2


class InputError(FtflowError):
    """Raised when a source cannot be read at all: missing path, unknown format, bad query."""

    exit_code = 2


class EnvironmentFailure(FtflowError):
    """Raised when the machine refuses a file operation: a read-only or full disk, a missing or
    unwritable folder, a file gone while being read. The message names the operation and path."""

    exit_code = 2

    @classmethod
    def from_os_error(cls, exc: OSError, where: object = None) -> EnvironmentFailure:
        """The failure naming the file(s) the OSError names, else `where` (a write to a full disk names none)."""
        named = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        place = named or (str(where) if where is not None else "")
        return cls(f"{exc.strerror or exc}: {place}" if place else f"{exc.strerror or exc}")


class ShardFailed(FtflowError):
    """Raised when preparing one shard fails; exits with the code of the error that caused it."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DataError(FtflowError):
    """Raised when the prepared data must not go on to upload."""

    exit_code = 3


class QualityGateFailed(DataError):
    """Raised when a dataset-level Great Expectations suite fails."""

    def __init__(self, message: str, *, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed


class BudgetExceeded(DataError):
    """Raised when the estimated training cost is above the configured maximum."""

    def __init__(self, *, estimated_usd: float, max_usd: float) -> None:
        super().__init__(f"estimated training cost {usd(estimated_usd)} is over the budget of {usd(max_usd)}")
        self.estimated_usd = estimated_usd
        self.max_usd = max_usd


class ProviderError(FtflowError):
    """Raised when the fine-tuning provider refuses or fails an operation."""

    exit_code = 4


class ProviderRefused(ProviderError):
    """Raised when the provider will not fine-tune at all (organisation, model, quota)."""


class UploadRejected(ProviderError):
    """Raised when an uploaded file ends in status `error`."""


class JobFailed(ProviderError):
    """Raised when a fine-tuning job ends in `failed`; carries the provider's error.

    `provider_error`: the job's error as the provider gave it (code, message, param, line) and,
    when it gave no reason, the job's last events.
    """

    def __init__(self, message: str, *, job_id: str, code: str | None,
                 provider_error: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.code = code
        self.provider_error = provider_error


class JobCancelled(ProviderError):
    """Raised when a fine-tuning job ends in `cancelled`."""


class JobTimeout(ProviderError):
    """Raised when a job is not finished by the polling deadline."""
