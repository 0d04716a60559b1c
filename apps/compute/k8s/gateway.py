"""The one place that talks to the Kubernetes API server (through the official client)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import urllib3
from django.conf import settings

from apps.compute.base import BackendRejected, BackendUnavailable
from apps.compute.k8s.ratelimit import RateLimiter, shared_limiter

MERGE_PATCH = "application/merge-patch+json"
# Statuses that say "try again later" rather than "this request is wrong".
_TRANSIENT_4XX = frozenset({408, 429})


class KubeApi(Protocol):
    """What the backend needs from the cluster, on plain dicts (KubeGateway, or a fake)."""

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> bool: ...

    def list_jobs(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...

    def list_events(self, namespace: str, field_selector: str = "") -> list[dict[str, Any]]: ...

    def delete_job(self, namespace: str, name: str) -> bool: ...

    def read_pod_log(self, namespace: str, pod: str, tail_lines: int) -> str: ...

    def list_nodes(self) -> list[dict[str, Any]]: ...

    # The ConfigMap of an Indexed Job's per-trial scripts, and one index's pods (apps.compute.k8s.indexed).
    def create_config_map(self, namespace: str, manifest: dict[str, Any]) -> bool: ...

    def patch_config_map(self, namespace: str, name: str, data: dict[str, str]) -> bool: ...

    def delete_config_map(self, namespace: str, name: str) -> bool: ...

    def delete_pod(self, namespace: str, name: str) -> bool: ...


class KubeCustomObjects(Protocol):
    """Namespaced custom resources (KServe InferenceServices), on plain dicts, plus the pod
    reads a model server's logs need (KubeGateway, or a fake)."""

    def create_custom_object(
        self, group: str, version: str, namespace: str, plural: str, manifest: dict[str, Any]
    ) -> bool: ...

    def get_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any] | None: ...

    def patch_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None: ...

    def delete_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> bool: ...

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...

    def read_pod_log(self, namespace: str, pod: str, tail_lines: int, container: str = "") -> str: ...


def selector_matches(labels: dict[str, str] | None, selector: str) -> bool:
    """Whether `labels` satisfy an equality-based label selector (`a=b,c!=d,e,!f`).

    The API server filters lists by selector already; applying it again here keeps the
    answer right against servers that do not (kmock ignores selectors on lists)."""
    labels = labels or {}
    for raw in selector.split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _api_message(exc: Any) -> str:
    """The API server's own explanation from an ApiException (a Status object as JSON)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
        except (TypeError, ValueError):
            return str(body)[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(getattr(exc, "reason", "") or "no details")


class KubeGateway:
    """Every call Plinth makes to the API server, on plain dicts.

    Why one gateway: it is the single place that applies the client-side rate limit, the
    request timeout and the error mapping (unreachable → BackendUnavailable, refused →
    BackendRejected), and the seam where tests put a fake or an emulator. Responses are read
    with `_preload_content=False` and json.loads, so the backend sees the same dicts whether
    the server is real, kmock, or a fake, and never depends on the client's model classes.

    Configuration comes from `settings.PLINTH_KUBECONFIG` or `PLINTH_KUBE_IN_CLUSTER`, loaded
    on first use (building a backend must not need a reachable cluster), or from an explicit
    `api_client` (tests point one at kmock)."""

    def __init__(
        self,
        api_client: Any | None = None,
        *,
        limiter: RateLimiter | None = None,
        timeout: float | None = None,
    ) -> None:
        self._api_client = api_client
        self._client_lock = threading.Lock()
        self.limiter = limiter if limiter is not None else shared_limiter()
        self.timeout = float(settings.PLINTH_KUBE_TIMEOUT if timeout is None else timeout)
        self.calls: Counter[str] = Counter()  # requests sent, per gateway method
        self._calls_lock = threading.Lock()

    # --- configuration --------------------------------------------------------------
    @property
    def api_client(self) -> Any:
        with self._client_lock:
            if self._api_client is None:
                self._api_client = self._load_api_client()
            return self._api_client

    @staticmethod
    def _load_api_client() -> Any:
        from kubernetes import client, config

        if not (settings.PLINTH_KUBECONFIG or settings.PLINTH_KUBE_IN_CLUSTER):
            raise BackendUnavailable(
                "The Kubernetes backend is not configured: set PLINTH_KUBECONFIG or PLINTH_KUBE_IN_CLUSTER."
            )
        configuration = client.Configuration()
        try:
            if settings.PLINTH_KUBE_IN_CLUSTER:
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(config_file=settings.PLINTH_KUBECONFIG, client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise BackendUnavailable(f"Could not load the Kubernetes configuration: {exc}") from exc
        # urllib3 would retry each failed GET three times behind the rate limiter's back and
        # multiply the timeout; the reconciler already retries on its next pass.
        configuration.retries = 0
        return client.ApiClient(configuration)

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    # --- the one request path -------------------------------------------------------
    def _send(self, what: str, method: str, call: Callable[..., Any], tolerate: frozenset[int] = frozenset()) -> Any:
        """Send one request: rate-limited, with the timeout, errors mapped. Returns the raw
        urllib3 response, or None when the server answered with a status in `tolerate`."""
        from kubernetes.client.exceptions import ApiException

        self.limiter.acquire()
        with self._calls_lock:
            self.calls[method] += 1
        try:
            return call(_preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            status = int(exc.status or 0)
            if status in tolerate:
                return None
            message = _api_message(exc)
            if status == 0 or status >= 500 or status in _TRANSIENT_4XX:
                raise BackendUnavailable(
                    f"The Kubernetes API server could not {what} (HTTP {status or 'error'}): {message}"
                ) from exc
            raise BackendRejected(f"The Kubernetes API server refused to {what}: {message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Connection refused, DNS, TLS and read timeouts all land here (urllib3 wraps them).
            raise BackendUnavailable(
                f"The Kubernetes API server could not be reached to {what}: {type(exc).__name__}: {exc}"
            ) from exc

    @staticmethod
    def _json(response: Any) -> Any:
        try:
            return json.loads(response.data)
        except ValueError as exc:
            raise BackendUnavailable("The Kubernetes API server sent an answer that is not JSON.") from exc

    def _items(self, response: Any, label_selector: str = "") -> list[dict[str, Any]]:
        items = self._json(response).get("items") or []
        return [item for item in items if selector_matches(item.get("metadata", {}).get("labels"), label_selector)]

    # --- the operations -------------------------------------------------------------
    def create_job(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create a Job. True: created; False: one with that name already exists (a retried
        submit after a crash: the caller counts it as success)."""
        name = manifest.get("metadata", {}).get("name", "?")
        batch = self._batch()
        response = self._send(
            f"create job {name} in {namespace}",
            "create_job",
            lambda **kw: batch.create_namespaced_job(namespace, manifest, **kw),
            tolerate=frozenset({409}),
        )
        return response is not None

    def list_jobs(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        batch = self._batch()
        response = self._send(
            f"list jobs in {namespace}",
            "list_jobs",
            lambda **kw: batch.list_namespaced_job(namespace, label_selector=label_selector, **kw),
        )
        return self._items(response, label_selector)

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        core = self._core()
        response = self._send(
            f"list pods in {namespace}",
            "list_pods",
            lambda **kw: core.list_namespaced_pod(namespace, label_selector=label_selector, **kw),
        )
        return self._items(response, label_selector)

    def list_events(self, namespace: str, field_selector: str = "") -> list[dict[str, Any]]:
        """Events of the namespace (callers filter by involved object: not every server
        honours field selectors)."""
        core = self._core()
        response = self._send(
            f"list events in {namespace}",
            "list_events",
            lambda **kw: core.list_namespaced_event(namespace, field_selector=field_selector, **kw),
        )
        return list(self._json(response).get("items") or [])

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods. False when it was already gone."""
        batch = self._batch()
        response = self._send(
            f"delete job {name} in {namespace}",
            "delete_job",
            lambda **kw: batch.delete_namespaced_job(name, namespace, propagation_policy="Background", **kw),
            tolerate=frozenset({404}),
        )
        return response is not None

    def read_pod_log(self, namespace: str, pod: str, tail_lines: int, container: str = "") -> str:
        """The last lines a pod wrote (of `container`, needed when the pod has several); ""
        when the pod is gone (404) or its container has not started yet (the API server
        answers 400 then)."""
        core = self._core()
        extra = {"container": container} if container else {}
        response = self._send(
            f"read the log of pod {pod} in {namespace}",
            "read_pod_log",
            lambda **kw: core.read_namespaced_pod_log(pod, namespace, tail_lines=tail_lines, **extra, **kw),
            tolerate=frozenset({400, 404}),
        )
        if response is None:
            return ""
        data = response.data
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)

    def list_nodes(self) -> list[dict[str, Any]]:
        core = self._core()
        response = self._send("list nodes", "list_nodes", lambda **kw: core.list_node(**kw))
        return self._items(response)

    # --- custom resources (KServe InferenceServices) --------------------------------------
    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def create_custom_object(
        self, group: str, version: str, namespace: str, plural: str, manifest: dict[str, Any]
    ) -> bool:
        """Create a namespaced custom object, the API server checking fields strictly
        (`fieldValidation=Strict`: an unknown field is a 400, never silently pruned).
        True: created; False: one with that name already exists (409)."""
        name = manifest.get("metadata", {}).get("name", "?")
        custom = self._custom()
        response = self._send(
            f"create {plural} {name} in {namespace}",
            "create_custom_object",
            lambda **kw: custom.create_namespaced_custom_object(
                group, version, namespace, plural, manifest, field_validation="Strict", **kw
            ),
            tolerate=frozenset({409}),
        )
        return response is not None

    def get_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any] | None:
        """A namespaced custom object as a dict, or None when there is none (404)."""
        custom = self._custom()
        response = self._send(
            f"read {plural} {name} in {namespace}",
            "get_custom_object",
            lambda **kw: custom.get_namespaced_custom_object(group, version, namespace, plural, name, **kw),
            tolerate=frozenset({404}),
        )
        if response is None:
            return None
        found: dict[str, Any] = self._json(response)
        return found

    def patch_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Apply a JSON merge patch (RFC 7386: a null value removes the key) with strict
        field validation. Returns the object after the patch, or None when it is gone (404)."""
        custom = self._custom()
        response = self._send(
            f"patch {plural} {name} in {namespace}",
            "patch_custom_object",
            lambda **kw: custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, patch, field_validation="Strict", **kw
            ),
            tolerate=frozenset({404}),
        )
        if response is None:
            return None
        found: dict[str, Any] = self._json(response)
        return found

    def delete_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> bool:
        """Delete a namespaced custom object (its owned objects go in the background).
        False when it was already gone."""
        custom = self._custom()
        response = self._send(
            f"delete {plural} {name} in {namespace}",
            "delete_custom_object",
            lambda **kw: custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name, propagation_policy="Background", **kw
            ),
            tolerate=frozenset({404}),
        )
        return response is not None

    def create_config_map(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create a ConfigMap. True: created; False: one with that name already exists."""
        name = manifest.get("metadata", {}).get("name", "?")
        core = self._core()
        response = self._send(
            f"create config map {name} in {namespace}",
            "create_config_map",
            lambda **kw: core.create_namespaced_config_map(namespace, manifest, **kw),
            tolerate=frozenset({409}),
        )
        return response is not None

    def patch_config_map(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Merge `data` into a ConfigMap's keys (a JSON merge patch). False when it is gone (404)."""
        core = self._core()
        response = self._send(
            f"patch config map {name} in {namespace}",
            "patch_config_map",
            lambda **kw: core.patch_namespaced_config_map(
                name, namespace, {"data": data}, _content_type=MERGE_PATCH, **kw
            ),
            tolerate=frozenset({404}),
        )
        return response is not None

    def delete_config_map(self, namespace: str, name: str) -> bool:
        """Delete a ConfigMap. False when it was already gone (404)."""
        core = self._core()
        response = self._send(
            f"delete config map {name} in {namespace}",
            "delete_config_map",
            lambda **kw: core.delete_namespaced_config_map(name, namespace, **kw),
            tolerate=frozenset({404}),
        )
        return response is not None

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete a pod with its grace period (the kubelet stops the container with SIGTERM).
        False when it was already gone (404)."""
        core = self._core()
        response = self._send(
            f"delete pod {name} in {namespace}",
            "delete_pod",
            lambda **kw: core.delete_namespaced_pod(name, namespace, **kw),
            tolerate=frozenset({404}),
        )
        return response is not None
