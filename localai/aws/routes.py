"""AWS's APIs as boto3 calls them with `endpoint_url=http://host:port/<prefix>`.

- `/s3/{bucket}[/{key}]`: S3 path-style (CreateBucket, PutObject, GetObject, HeadObject,
  ListObjectsV2, CreateMultipartUpload, UploadPart, CompleteMultipartUpload); XML answers.
- `/bedrock/...`: the control plane (rest-json): model customization jobs and custom model
  deployments.
- `/bedrock-runtime/model/{modelId}/converse`.

Every request carries a SigV4 signature made with the service key as the secret access key.
Route names (`s3.put_object`, `bedrock.create_model_customization_job`, ...) are the operations
fault injection targets.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from localai.dialect import Dialect

from . import sigv4
from .exceptions import AwsError, auth_error, s3_error
from .models import AwsBackend, iso

s3 = APIRouter(prefix="/s3")
bedrock = APIRouter(prefix="/bedrock")
runtime = APIRouter(prefix="/bedrock-runtime")
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def aws(request: Request) -> AwsBackend:
    return request.app.state.service.aws


def xml(root: str, fields: dict[str, Any] | str, status: int = 200) -> Response:
    inner = fields if isinstance(fields, str) else "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields.items())
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">{inner}</{root}>',
                    status_code=status, media_type="application/xml")


# --- S3 ----------------------------------------------------------------------------------------


@s3.put("/{bucket}", name="s3.create_bucket")
def create_bucket(request: Request, bucket: str) -> Response:
    aws(request).create_bucket(bucket)
    return Response(status_code=200, headers={"Location": f"/{bucket}"})


@s3.get("/{bucket}", name="s3.list_objects_v2")
def list_objects(request: Request, bucket: str, prefix: str = "") -> Response:
    objects = aws(request).list_objects(bucket, prefix)
    contents = "".join(
        f"<Contents><Key>{escape(o['key'])}</Key><LastModified>{iso(o['modified'])}</LastModified>"
        f"<ETag>&quot;{o['etag']}&quot;</ETag><Size>{o['size']}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for o in objects)
    head = (f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(objects)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>")
    return xml("ListBucketResult", head + contents)


@s3.put("/{bucket}/{key:path}", name="s3.put_object")
async def put_object(request: Request, bucket: str, key: str) -> Response:
    content = await request.body()
    query = request.query_params
    backend = aws(request)
    if "uploadId" in query:
        try:
            number = int(query.get("partNumber", ""))
        except ValueError:
            raise s3_error(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive") \
                from None
        etag = backend.upload_part(query["uploadId"], number, content)
    else:
        etag = backend.put_object(bucket, key, content)
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


@s3.head("/{bucket}/{key:path}", name="s3.get_object")  # HeadObject: the same headers, no body
@s3.get("/{bucket}/{key:path}", name="s3.get_object")
def get_object(request: Request, bucket: str, key: str) -> Response:
    found, content = aws(request).get_object(bucket, key)
    headers = {"ETag": f'"{found["etag"]}"', "Last-Modified": iso(found["modified"]) or "",
               "Content-Length": str(found["size"])}
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Response(content, media_type="application/octet-stream", headers=headers)


@s3.post("/{bucket}/{key:path}", name="s3.multipart_upload")
async def multipart(request: Request, bucket: str, key: str) -> Response:
    query = request.query_params
    backend = aws(request)
    if "uploads" in query:
        upload_id = backend.create_multipart(bucket, key)
        return xml("InitiateMultipartUploadResult", {"Bucket": bucket, "Key": key, "UploadId": upload_id})
    if "uploadId" not in query:
        raise s3_error(400, "InvalidRequest", "A POST to an object needs ?uploads or ?uploadId.")
    try:
        root = ElementTree.fromstring(await request.body())
    except ElementTree.ParseError:
        raise s3_error(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against "
                       "our published schema.") from None
    parts = [(int(p.findtext(f"{{{S3_NS}}}PartNumber") or p.findtext("PartNumber") or 0),
              p.findtext(f"{{{S3_NS}}}ETag") or p.findtext("ETag") or "")
             for p in root.iter() if p.tag.endswith("Part")]
    etag = backend.complete_multipart(query["uploadId"], parts)
    return xml("CompleteMultipartUploadResult",
               {"Location": f"/{bucket}/{key}", "Bucket": bucket, "Key": key, "ETag": f'"{etag}"'})


# --- Bedrock control plane -----------------------------------------------------------------------


@bedrock.post("/model-customization-jobs", name="bedrock.create_model_customization_job", status_code=201)
def create_job(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    return aws(request).create_job(body)


@bedrock.get("/model-customization-jobs", name="bedrock.list_model_customization_jobs")
def list_jobs(request: Request, nameContains: str | None = None, statusEquals: str | None = None) -> dict:  # noqa: N803
    return aws(request).list_jobs(nameContains, statusEquals)


@bedrock.get("/model-customization-jobs/{identifier:path}", name="bedrock.get_model_customization_job")
def get_job(request: Request, identifier: str) -> dict:
    backend = aws(request)
    return backend.job_view(backend.job(identifier))


@bedrock.post("/model-customization-jobs/{identifier:path}/stop", name="bedrock.stop_model_customization_job")
def stop_job(request: Request, identifier: str) -> dict:
    aws(request).stop_job(identifier)
    return {}


@bedrock.post("/model-customization/custom-model-deployments", name="bedrock.create_custom_model_deployment",
              status_code=202)
def create_deployment(request: Request, body: dict[str, Any] = Body(...)) -> dict:
    return aws(request).create_deployment(body)


@bedrock.get("/model-customization/custom-model-deployments", name="bedrock.list_custom_model_deployments")
def list_deployments(request: Request) -> dict:
    return aws(request).list_deployments()


@bedrock.get("/model-customization/custom-model-deployments/{identifier:path}",
             name="bedrock.get_custom_model_deployment")
def get_deployment(request: Request, identifier: str) -> dict:
    backend = aws(request)
    return backend.deployment_view(backend.deployment(identifier))


@bedrock.delete("/model-customization/custom-model-deployments/{identifier:path}",
                name="bedrock.delete_custom_model_deployment")
def delete_deployment(request: Request, identifier: str) -> dict:
    aws(request).delete_deployment(identifier)
    return {}


# --- Bedrock runtime -----------------------------------------------------------------------------


@runtime.post("/model/{model_id:path}/converse", name="bedrock_runtime.converse")
def converse(request: Request, model_id: str, body: dict[str, Any] = Body(...)) -> dict:
    return aws(request).converse(model_id, body)


class AwsDialect(Dialect):
    """SigV4 instead of a bearer key; AWS's error shapes (JSON with `x-amzn-ErrorType`)."""

    name = "bedrock"
    prefixes: tuple[str, ...] = ("/bedrock/",)
    protocol = "json"
    signed = True

    def routers(self) -> Sequence[APIRouter]:
        return [bedrock]

    def verify(self, scope: MutableMapping[str, Any], body: bytes, secret: str) -> AwsError | None:
        found = sigv4.problem(scope, body, secret)
        return auth_error(*found, protocol=self.protocol) if found else None

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> AwsError:
        if self.protocol == "xml":
            return s3_error(status, "InvalidRequest" if status != 404 else "NoSuchKey", message)
        return AwsError(status, "ValidationException" if status != 404 else "UnknownOperationException", message)

    def rate_limited(self, retry_after: float) -> AwsError:
        if self.protocol == "xml":
            return s3_error(503, "SlowDown", "Please reduce your request rate.")
        return AwsError(429, "ThrottlingException", "Rate exceeded")

    def server_error(self, status: int) -> AwsError:
        if self.protocol == "xml":
            return s3_error(status, "InternalError" if status == 500 else "ServiceUnavailable",
                            "We encountered an internal error. Please try again.")
        code = "InternalServerException" if status == 500 else "ServiceUnavailableException"
        return AwsError(status, code, "The request processing has failed because of an unknown error.")


class S3Dialect(AwsDialect):
    name = "s3"
    prefixes = ("/s3/",)
    protocol = "xml"

    def routers(self) -> Sequence[APIRouter]:
        return [s3]


class BedrockDialect(AwsDialect):
    pass


class BedrockRuntimeDialect(AwsDialect):
    name = "bedrock-runtime"
    prefixes = ("/bedrock-runtime/",)

    def routers(self) -> Sequence[APIRouter]:
        return [runtime]
