"""Together AI's dialect under `/together/v1/...`: files, fine-tunes and chat, as the `together` SDK calls them.

models.py holds the account's state and Together's view of it, routes.py the API,
exceptions.py Together's errors.
"""

from localai.together.models import TogetherBackend
from localai.together.routes import TogetherDialect

__all__ = ["TogetherBackend", "TogetherDialect"]
