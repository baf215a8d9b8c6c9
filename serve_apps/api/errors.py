"""Every error the API returns is JSON `{"detail": ...}`; nothing internal is echoed back."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.storage.errors import ReadTimeoutError
from serve_apps.api.client import Unavailable

logger = logging.getLogger(__name__)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Field locations and messages only: never echo the offending input back.
    errors = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"{exc} unavailable"}, status_code=503)


async def _store_busy(_request: Request, exc: Exception) -> JSONResponse:
    # a read interrupted at the store's deadline (pipelines.storage.ReadTimeoutError)
    return JSONResponse(
        {"detail": "the store is busy: try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """HTTP errors keep status and headers, 422 lists fields, Unavailable and an interrupted
    read → 503, else 500."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(ReadTimeoutError, _store_busy)
    app.add_exception_handler(Exception, _unexpected)
