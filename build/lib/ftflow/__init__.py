"""ftflow: raw conversations to fine-tuned OpenAI chat models, as Prefect flows."""

__version__ = "0.1.0"
