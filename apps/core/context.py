"""Who is asking, from where: a request id and client IP that services and logs can read
without every function passing the request around."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    ip: str | None = None


_EMPTY = RequestContext()
_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("plinth_request", default=_EMPTY)


def current() -> RequestContext:
    return _current.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def bind(request_id: str, ip: str | None = None) -> Iterator[RequestContext]:
    ctx = RequestContext(request_id=request_id, ip=ip)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
