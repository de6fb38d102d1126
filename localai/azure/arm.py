"""Azure Resource Manager's deployment route: the control plane that makes a model answer.

`PUT /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/
{acct}/deployments/{name}?api-version=2024-10-01` with `{"sku": {"name", "capacity"},
"properties": {"model": {"format": "OpenAI", "name": <model>, "version": "1"}}}` (Microsoft's
fine-tuning-deploy how-to). On Azure this is management.azure.com with an Entra bearer token;
here it is the same port with `Authorization: Bearer <service key>`. The deployment is
`Creating`, then `Succeeded` (provisioningState); only then does it answer chat under its name.
The emulator has one resource: any subscription/group/account names address it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from localai.dialect import Dialect, Scope, bearer
from localai.exceptions import APIError

from .exceptions import AzureError
from .models import AzureBackend

ACCOUNT = (
    "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.CognitiveServices/accounts/{account}"
)


def require_api_version(api_version: str | None = Query(None, alias="api-version")) -> None:
    if not api_version:
        # ARM's own wording for a request without api-version.
        raise AzureError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )


router = APIRouter(dependencies=[Depends(require_api_version)])


def azure(request: Request) -> AzureBackend:
    return request.app.state.service.azure


@router.put(ACCOUNT + "/deployments/{name}", name="azure.deployments.create_or_update")
def put_deployment(
    request: Request, subscription: str, group: str, account: str, name: str, body: dict = Body(...)
) -> JSONResponse:
    scope = ACCOUNT.format(subscription=subscription, group=group, account=account)
    view, created = azure(request).put_deployment(name, body, scope=scope)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get(ACCOUNT + "/deployments/{name}", name="azure.deployments.get")
def get_deployment(request: Request, subscription: str, group: str, account: str, name: str) -> dict:
    backend = azure(request)
    return backend.deployment_view(backend.get_deployment(name))


@router.get(ACCOUNT + "/deployments", name="azure.deployments.list")
def list_deployments(request: Request, subscription: str, group: str, account: str) -> dict:
    backend = azure(request)
    return {"value": [backend.deployment_view(d) for d in backend.store.list("deployment")]}


@router.delete(ACCOUNT + "/deployments/{name}", name="azure.deployments.delete")
def delete_deployment(request: Request, subscription: str, group: str, account: str, name: str) -> Response:
    azure(request).delete_deployment(name)
    return Response(status_code=200)


class ArmDialect(Dialect):
    name = "azure-arm"
    prefixes = ("/subscriptions/",)

    def routers(self) -> Sequence[APIRouter]:
        return [router]

    def credential(self, scope: Scope) -> str | None:
        return bearer(scope)

    def unauthorized(self, token: str | None) -> APIError:
        if token is None:
            return AzureError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        return AzureError(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def rate_limited(self, retry_after: float) -> APIError:
        return AzureError(
            429,
            "TooManyRequests",
            "The request is being throttled.",
            headers={"retry-after": f"{retry_after:g}"},
        )

    def server_error(self, status: int) -> APIError:
        return AzureError(status, "InternalServerError", "The server encountered an internal error.")

    def invalid(self, message: str, *, param: str | None = None, status: int = 400) -> APIError:
        return AzureError(status, "InvalidRequestContent" if status == 400 else "NotFound", message, target=param)
