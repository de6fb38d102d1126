"""AWS's dialect: S3 under `/s3` (path-style), Bedrock's control plane under `/bedrock` and its
runtime under `/bedrock-runtime`, as `boto3` calls them with `endpoint_url=`.

Every request is signed with SigV4; the service key is the secret access key (any access key
id). models.py holds the account's state (buckets, customization jobs, deployments), routes.py
the three APIs, sigv4.py the signature check, exceptions.py AWS's errors (XML for S3, JSON with
`x-amzn-ErrorType` for Bedrock).
"""

from localai.aws.models import AwsBackend
from localai.aws.routes import BedrockDialect, BedrockRuntimeDialect, S3Dialect

__all__ = ["AwsBackend", "BedrockDialect", "BedrockRuntimeDialect", "S3Dialect"]
