"""ftflow: raw conversations to fine-tuned OpenAI chat models, as Prefect flows."""

from ftflow.process_exit import register_last_exit_hook

register_last_exit_hook()  # first of all: exit hooks run last-registered first (ftflow/process_exit.py)

from ftflow.environment import apply_prefect_defaults  # noqa: E402

__version__ = "0.1.0"

apply_prefect_defaults()
