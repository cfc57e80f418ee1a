"""HTTP errors of the API: one body shape, and the one place exceptions become status codes.

Every error answer is ``{"error": {"status", "code", "message", "problems"}}``; a 422 lists
every bad field with its path (``body.resources.web-1.address``, ``query.limit``) and, for
master-file text, its line. Handlers are installed on the app by `install_handlers`:

    ApiError            raised by routes on purpose (401, 403, 404, 409, 412, 422, 429, 503),
                        and by the body limits (413, 422) before any route runs
    RequestValidationError   FastAPI's parameter/body checks          -> 422
    ConfigError         a zone or policy the operator sent is invalid  -> 422
    StoreError          the store cannot be read or written            -> 503
    Exception           anything else: logged, answered as 500 without details
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from shadowdns.errors import ConfigError, Problem, StoreError

log = logging.getLogger(__name__)


class ProblemItem(BaseModel):
    """One reason a request was refused: where (a dotted path) and why."""

    path: str
    message: str
    line: int | None = None


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    problems: list[ProblemItem] = []


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class ApiError(Exception):
    """An HTTP error a route raises on purpose."""

    def __init__(self, status: int, code: str, message: str,
                 problems: Sequence[ProblemItem] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(status=self.status, code=self.code,
                                           message=self.message, problems=self.problems))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def invalid(message: str, problems: Iterable[ProblemItem]) -> ApiError:
    return ApiError(422, "invalid", message, list(problems))


def problems_from_config(exc: ConfigError, prefix: str = "body",
                         strip: str | None = None) -> list[ProblemItem]:
    """Turn file problems into API problems.

    Policy problems carry their path in the reason (``resources.x.address: bad``). With
    `strip`, the request body is the object at that policy path: problems inside it get
    `prefix` (``body.address``), problems elsewhere in the policy keep their full path under
    ``policy.`` (a location deleted while a resource still uses it).
    """
    return [problem_item(p, prefix, strip) for p in exc.problems]


def problem_item(problem: Problem, prefix: str = "body",
                 strip: str | None = None) -> ProblemItem:
    reason = problem.reason
    path = ""
    head, sep, tail = reason.partition(": ")
    if sep and head and " " not in head:
        path, reason = head, tail
    if strip is not None and strip:
        if path == strip or path.startswith((strip + ".", strip + "[")):
            path = path[len(strip):].lstrip(".")
        else:
            prefix = "policy"
    full = ".".join(part for part in (prefix, path) if part)
    return ProblemItem(path=full, message=reason, line=problem.line)


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _message(err: Mapping[str, Any]) -> str:
    loc = err.get("loc", ())
    if err.get("type") == "extra_forbidden" and loc:
        return f"unknown field {loc[-1]!r}: not part of this object"
    return str(err.get("msg", ""))


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [ProblemItem(path=_loc(err.get("loc", ())), message=_message(err))
                for err in exc.errors()]
    return invalid(f"{len(problems)} invalid field(s)", problems).response()


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _config_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    problems = problems_from_config(exc)
    return invalid(f"{len(problems)} problem(s)", problems).response()


async def _store_handler(request: Request, exc: Exception) -> JSONResponse:
    log.warning("store error on %s %s: %s", request.method, request.url.path, exc)
    return ApiError(503, "store_unavailable", f"the store failed: {exc}").response()


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # a body that is not JSON at all: a validation error too
        return invalid("the request body cannot be parsed",
                       [ProblemItem(path="body", message=str(exc.detail))]).response()
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return ApiError(exc.status_code, code, str(exc.detail), headers=headers).response()


async def _internal_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path,
                  exc_info=exc)
    return ApiError(500, "internal", "internal error; see the server log").response()


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(ConfigError, _config_handler)
    app.add_exception_handler(StoreError, _store_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _internal_handler)


def _response(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RESPONSES_READ: dict[int | str, dict[str, Any]] = {
    401: _response("no valid bearer token"),
    403: _response("the token's role is not enough"),
    404: _response("no such object"),
    422: _response("invalid parameters, with the path of every bad field"),
    429: _response("too many failed logins from this address; retry after Retry-After"),
    503: _response("the store or the audit log is unavailable; nothing was changed"),
}
RESPONSES_WRITE: dict[int | str, dict[str, Any]] = {
    **RESPONSES_READ,
    409: _response("conflicts with the current configuration; nothing was written"),
    413: _response("the request body is larger than the server accepts"),
    412: _response("If-Match does not match the object's current ETag"),
}
