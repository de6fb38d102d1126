"""Google's dialects: Vertex AI tuning and endpoints under `/vertex/v1beta1/...`, Cloud Storage under `/gcs/...`.

models.py holds the project's state (buckets, objects, tuning jobs on the shared engine) and
Google's view of it, routes.py both APIs, exceptions.py Google's error envelope.
"""

from localai.vertex.models import VertexBackend
from localai.vertex.routes import StorageDialect, VertexDialect

__all__ = ["StorageDialect", "VertexBackend", "VertexDialect"]
