"""Azure OpenAI's dialect: data plane under `/openai/...` (dated and v1), ARM deployments under `/subscriptions/...`.

models.py holds the resource's state and Azure's view of it, routes.py the data plane,
arm.py the control plane, exceptions.py Azure's error envelope.
"""

from localai.azure.arm import ArmDialect
from localai.azure.models import AzureBackend
from localai.azure.routes import AzureDialect

__all__ = ["ArmDialect", "AzureBackend", "AzureDialect"]
