"""SigV4 as AWS checks it: rebuild the canonical request from what arrived, sign it with the secret.

botocore signs S3 paths as sent and every other service's path URI-encoded once more
(`%3A` becomes `%253A`); the payload hash is `x-amz-content-sha256` where the client sent it
(S3), else the sha256 of the body. The request time is not checked against the clock.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"


def _headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for key, value in scope.get("headers", []):
        found.setdefault(key.decode("latin-1").lower(), []).append(" ".join(value.decode("latin-1").split()))
    return {name: ",".join(values) for name, values in found.items()}


def _key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def problem(scope: MutableMapping[str, Any], body: bytes, secret: str) -> tuple[str, str] | None:
    """None when the request is signed with `secret`; else (AWS error code, message)."""
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    if not authorization.startswith(ALGORITHM + " "):
        return "MissingAuthenticationToken", "Missing Authentication Token"
    try:
        fields = dict(part.strip().split("=", 1) for part in authorization[len(ALGORITHM) + 1:].split(","))
        _, date, region, service, _ = fields["Credential"].split("/")
        signed, signature = fields["SignedHeaders"].split(";"), fields["Signature"]
        amz_date = headers["x-amz-date"]
    except (KeyError, ValueError):
        return "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature."
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    path = raw_path if service == "s3" else quote(raw_path, safe="/~")
    query = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    payload = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([
        scope["method"], path, "&".join(f"{k}={v}" for k, v in query),
        "".join(f"{name}:{headers.get(name, '')}\n" for name in signed), ";".join(signed), payload,
    ])
    scope_text = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope_text, hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "SignatureDoesNotMatch", ("The request signature we calculated does not match the signature you "
                                         "provided. Check your AWS Secret Access Key and signing method.")
    if service == "s3" and payload not in ("UNSIGNED-PAYLOAD", hashlib.sha256(body).hexdigest()) \
            and not payload.startswith("STREAMING-"):
        return "XAmzContentSHA256Mismatch", ("The provided 'x-amz-content-sha256' header does not match what was "
                                             "computed.")
    return None
