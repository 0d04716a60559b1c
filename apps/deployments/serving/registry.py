"""Which serving backend runs a deployment: the one named by `Deployment.backend`."""

from __future__ import annotations

from functools import cache

from apps.core.errors import InvalidInput
from apps.deployments.serving.base import ServingBackend


@cache
def serving_backend(name: str) -> ServingBackend:
    """The serving backend for `name` ("local" or "kubernetes"), one instance per process.

    Raises InvalidInput for any other name."""
    if name == "local":
        from apps.deployments.serving.local import LocalServing

        return LocalServing()
    if name == "kubernetes":
        from apps.deployments.serving.kubernetes import KServeServing

        return KServeServing()
    raise InvalidInput.field("backend", f"No serving backend is called {name!r}; use local or kubernetes.")
