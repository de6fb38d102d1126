"""Record passes, one per training method (tasks/passes/base.py says what a pass is)."""

from __future__ import annotations

from ftflow.settings import Settings
from tasks.passes.base import RecordPass
from tasks.passes.chat import ChatPass
from tasks.passes.preference import PreferencePass
from tasks.readers import ExtractOptions


def record_pass_for(settings: Settings, extract: ExtractOptions | None = None) -> RecordPass:
    """The run's record pass, by its `method` (`extract`: the options with the run's SQL source)."""
    kind = PreferencePass if settings.method == "dpo" else ChatPass
    return kind.from_settings(settings, extract)
