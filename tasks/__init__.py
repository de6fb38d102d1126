"""The steps of ftflow's flows. Importing them applies ftflow's Prefect defaults first (see ftflow.environment)."""

import ftflow  # noqa: F401 - applies the Prefect defaults before any task module imports prefect
