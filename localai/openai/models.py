"""OpenAI's account: the engine's resources as they are, plus Uploads and Moderations.

OpenAI's API is the engine's own shape, so nothing is mapped here. Its state is the store at
`data_dir` itself (the other dialects keep a subdirectory each); its jobs take the service's
refusal, daily job limit and the fault plan's job errors.
"""

from __future__ import annotations

from localai.config import ServiceConfig
from localai.engine.chat import ChatBackend
from localai.engine.files import FilesBackend
from localai.engine.jobs import JobsBackend
from localai.engine.models import ModelsBackend
from localai.faults import FaultInjector
from localai.store import Store

from .moderations import ModerationsBackend
from .uploads import UploadsBackend


class OpenAIBackend:
    """State of the emulated OpenAI organisation."""

    def __init__(self, config: ServiceConfig, faults: FaultInjector) -> None:
        self.store = Store(config.data_dir)
        self.files = FilesBackend(self.store, config.max_file_bytes)
        self.files.remove_abandoned_uploads()
        self.uploads = UploadsBackend(self.store, self.files)
        self.models = ModelsBackend(self.store)
        self.jobs = JobsBackend(
            self.store,
            self.files,
            self.models,
            seconds_per_1k_tokens=config.seconds_per_1k_tokens,
            refusal=config.refusal,
            daily_job_limit=config.daily_job_limit,
            faults=faults,
            max_running_jobs=config.max_running_jobs,
        )
        self.chat = ChatBackend(self.store, self.models, instruction_following=config.instruction_following)
        self.moderations = ModerationsBackend()
