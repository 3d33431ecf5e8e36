"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.orjson_response import OrjsonResponse

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",  # as OpenAI answers an unknown model or route
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


def error_body(
    message: str,
    *,
    type: str,
    param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """The JSON body of an error, also used for the SSE error event."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """An error answered as OpenAI-shaped JSON; raised in a request's task on the loop."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """JSON body in OpenAI's shape."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> Response:
        """The HTTP response for this error."""
        return OrjsonResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """400 invalid_request_error."""
    return APIError(400, message, param=param, code=code)


def unavailable(
    message: str, retry_after_s: int | None = None, code: str | None = None
) -> APIError:
    """503: the coordinator is not ready, unreachable, or the gateway queue is full."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return APIError(503, message, code=code, headers=headers)


def generation_failed(message: str, invalid: bool) -> APIError:
    """A sequence the coordinator ended with an error: 400 if the request was at fault, else 503."""
    if invalid:
        return bad_request(message, code="invalid_request")
    return APIError(503, message, code="generation_failed")


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler for APIError."""
    if not isinstance(exc, APIError):
        raise exc
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler turning routing errors (404, 405, ...) into OpenAI-shaped errors."""
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 404:
        message, code = f"no route for {request.method} {request.url.path}", "not_found"
    elif exc.status_code == 405:
        message, code = (
            f"method {request.method} not allowed on {request.url.path}",
            ("method_not_allowed"),
        )
    else:
        message, code = str(exc.detail), None
    err = APIError(exc.status_code, message, code=code, headers=exc.headers)
    return err.response()


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """Last-resort handler: an unexpected exception is a 500 in OpenAI's shape."""
    return APIError(500, f"internal error: {type(exc).__name__}").response()
