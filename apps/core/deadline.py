"""A time budget for the outbound calls of one web request.

gunicorn kills a worker whose request runs past its `--timeout` (PLINTH_WEB_TIMEOUT): the
user gets a bare 502 and the worker's other state is lost. A page that reads MLflow (a
compare reads many histories, each allowed 120 s for the workers' sake) must therefore
give up on MLflow in time to render a proper 503 page. `RequestBudgetMiddleware` binds
PLINTH_WEB_MLFLOW_BUDGET seconds to each request; the MLflow gateway caps every call's
connect and read timeouts to what is left (`cap_timeout`) and, once nothing is left, fails
the call as a timeout (MlflowUnavailable: a banner or a 503), however many calls or
retries the page makes. Outside a web request (Celery tasks) nothing is capped."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse

# Below this, a call would not get a useful answer: fail it rather than start it.
MIN_USEFUL_SECONDS = 0.2

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("plinth_deadline", default=None)


class BudgetSpent(requests.Timeout):
    """This web request's time for outbound calls is used up (a timeout, for callers)."""


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Let outbound calls made inside take at most `seconds` together (monotonic clock)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left of the current budget; None outside one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def cap_timeout(timeout: Any) -> Any:
    """`timeout` (seconds, or requests' (connect, read) pair) capped to what is left of the
    current budget; unchanged outside one. Raises BudgetSpent when nothing useful is left."""
    left = remaining()
    if left is None:
        return timeout
    if left < MIN_USEFUL_SECONDS:
        raise BudgetSpent(f"this request's {settings.PLINTH_WEB_MLFLOW_BUDGET:g} s for outbound calls is spent")
    if isinstance(timeout, tuple):
        return tuple(left if part is None else min(float(part), left) for part in timeout)
    return left if timeout is None else min(float(timeout), left)


class RequestBudgetMiddleware:
    """Binds PLINTH_WEB_MLFLOW_BUDGET seconds (a margin under PLINTH_WEB_TIMEOUT, gunicorn's
    --timeout) to each web request's outbound calls."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with budget(float(settings.PLINTH_WEB_MLFLOW_BUDGET)):
            return self.get_response(request)
