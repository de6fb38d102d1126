"""AWS's errors as boto3 reads them.

AwsError                      any AWS error; `protocol` says how it is rendered
├── S3 (XML)                  `<Error><Code>NoSuchKey</Code><Message>...</Message></Error>`
└── Bedrock (rest-json)       `{"message": ...}` with the code in `x-amzn-ErrorType`

botocore turns both into `ClientError` with `response["Error"]["Code"]` and the HTTP status.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from fastapi.responses import JSONResponse, Response

from localai.common import new_id
from localai.exceptions import APIError

# A signature problem is worded differently by S3 and by the JSON services.
JSON_AUTH_CODES = {"SignatureDoesNotMatch": "InvalidSignatureException",
                   "MissingAuthenticationToken": "MissingAuthenticationTokenException",
                   "IncompleteSignature": "IncompleteSignatureException"}


class AwsError(APIError):
    def __init__(self, status: int, code: str, message: str, *, protocol: str = "json",
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.protocol = protocol
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"message": self.message}

    def render(self) -> Response:
        request_id = new_id("", 16)
        if self.protocol == "xml":
            values = {"Code": str(self.code), "Message": self.message, **self.extra, "RequestId": request_id}
            fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items())
            return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{fields}</Error>', status_code=self.status,
                            media_type="application/xml", headers={"x-amz-request-id": request_id, **self.headers})
        headers = {"x-amzn-ErrorType": str(self.code), "x-amzn-RequestId": request_id, **self.headers}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def s3_error(status: int, code: str, message: str, **extra: str) -> AwsError:
    return AwsError(status, code, message, protocol="xml", extra=extra)


def validation(message: str) -> AwsError:
    return AwsError(400, "ValidationException", message)


def not_found(message: str) -> AwsError:
    return AwsError(404, "ResourceNotFoundException", message)


def conflict(message: str) -> AwsError:
    return AwsError(409, "ConflictException", message)


def auth_error(code: str, message: str, *, protocol: str) -> AwsError:
    return AwsError(403, code if protocol == "xml" else JSON_AUTH_CODES.get(code, code), message, protocol=protocol)
