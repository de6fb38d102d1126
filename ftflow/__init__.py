"""ftflow: raw conversations to fine-tuned OpenAI chat models, as Prefect flows."""

from ftflow.environment import apply_prefect_defaults

__version__ = "0.1.0"

apply_prefect_defaults()
