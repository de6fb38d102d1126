"""Fireworks AI's dialect under `/fireworks/...`: datasets, supervised fine-tuning jobs and DPO
jobs under `/fireworks/v1/accounts/{account}/...`, chat under `/fireworks/inference/v1/...`
(OpenAI-compatible), as the `fireworks-ai` SDK (1.x) and the `openai` SDK call them.

models.py holds the account's state and Fireworks' view of it, routes.py the API,
exceptions.py Fireworks' errors.
"""

from localai.fireworks.models import FireworksBackend
from localai.fireworks.routes import FireworksDialect

__all__ = ["FireworksBackend", "FireworksDialect"]
