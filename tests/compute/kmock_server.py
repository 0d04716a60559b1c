"""kmock's Kubernetes emulator served over HTTP from a background thread, for the contract
tests and the benchmark (the synchronous kubernetes client talks to it like an API server)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import kmock
from kubernetes import client

RESOURCES = {
    "batch/v1/jobs": ("Job", True),
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "v1/events": ("Event", True),
    "v1/configmaps": ("ConfigMap", True),
    "serving.kserve.io/v1beta1/inferenceservices": ("InferenceService", True),
}


class Emulator:
    """kmock's KubernetesEmulator served on a local port from its own event loop thread, so
    the synchronous kubernetes client can talk to it from the test thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.kmock: Any = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"kmock did not start: {self._error!r}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread by __init__
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for resource, (kind, namespaced) in RESOURCES.items():
                emulator.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)
            self.kmock = emulator
            self.url = str(server.url).rstrip("/")
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[Any], None]) -> None:
        """Run `fn(kmock)` on the emulator's loop (declaring routes is not thread-safe)."""
        assert self._loop is not None

        async def run() -> None:
            fn(self.kmock)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def requests(self) -> list[Any]:
        return list(self.kmock)

    def api_client(self) -> Any:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.retries = 0  # as the gateway configures clients it builds itself
        return client.ApiClient(configuration)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
