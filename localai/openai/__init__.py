"""OpenAI's dialect under `/v1/...`: files, uploads, fine-tuning jobs, models, chat and
moderations, as the `openai` SDK calls them.

models.py holds the organisation's state (the engine's resources as they are), routes.py the
API, uploads.py and moderations.py the two resources only OpenAI has. Its errors are the
engine's own (localai/exceptions.py): OpenAI's envelope.
"""

from localai.openai.models import OpenAIBackend
from localai.openai.routes import OpenAIDialect

__all__ = ["OpenAIBackend", "OpenAIDialect"]
