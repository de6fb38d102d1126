"""Record passes, one per training method (tasks/passes/base.py says what a pass is).

The chat pass has two engines with the same outputs (the `engine` setting): the reference, each
stage's own function per record (chat.py), and the fast one (fast_chat.py, the default).
"""

from __future__ import annotations

from ftflow.settings import Settings
from tasks.passes.base import RecordPass
from tasks.passes.chat import ChatPass
from tasks.passes.fast_chat import FastChatPass
from tasks.passes.preference import PreferencePass
from tasks.readers import ExtractOptions


def record_pass_for(settings: Settings, extract: ExtractOptions | None = None) -> RecordPass:
    """The run's record pass, by its `method` and `engine` (`extract`: the options with the run's SQL source)."""
    if settings.method == "dpo":
        kind: type[RecordPass] = PreferencePass
    else:
        kind = FastChatPass if settings.engine == "fast" else ChatPass
    return kind.from_settings(settings, extract)
