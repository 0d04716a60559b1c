"""What the access sync needs from the cluster: namespaces, RoleBindings, ResourceQuotas
and Kueue LocalQueues, read, created, merge-patched and deleted through the same request
path as the Job calls (rate limit, timeout, error mapping: KubeGateway._send).

The operations are generic over a small table of kinds rather than one method per kind and
verb: the reconciler treats every object alike (read, compare, create or patch, delete), so
the fake (tests/compute/fakes_rbac.py) implements five methods, not twenty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from apps.compute.k8s.gateway import KubeGateway

MERGE_PATCH = "application/merge-patch+json"
KUEUE_GROUP, KUEUE_VERSION, KUEUE_PLURAL = "kueue.x-k8s.io", "v1beta1", "localqueues"


@dataclass(frozen=True)
class Kind:
    """One kind the sync manages: its apiVersion and whether it lives in a namespace."""

    name: str
    api_version: str
    namespaced: bool


NAMESPACE = Kind("Namespace", "v1", namespaced=False)
ROLE_BINDING = Kind("RoleBinding", "rbac.authorization.k8s.io/v1", namespaced=True)
RESOURCE_QUOTA = Kind("ResourceQuota", "v1", namespaced=True)
LOCAL_QUEUE = Kind("LocalQueue", f"{KUEUE_GROUP}/{KUEUE_VERSION}", namespaced=True)
KINDS = {kind.name: kind for kind in (NAMESPACE, ROLE_BINDING, RESOURCE_QUOTA, LOCAL_QUEUE)}


class ObjectApi(Protocol):
    """Generic object operations on plain dicts (AccessGateway, or FakeAccessGateway)."""

    def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_object(self, kind: str, namespace: str, manifest: dict[str, Any]) -> bool: ...

    def patch_object(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def delete_object(self, kind: str, namespace: str, name: str) -> bool: ...

    def list_objects(self, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]: ...


class AccessGateway(KubeGateway):
    """KubeGateway plus the generic object operations of ObjectApi."""

    def _calls(self, kind: str) -> dict[str, Callable[..., Any]]:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        rbac = client.RbacAuthorizationV1Api(self.api_client)
        custom = client.CustomObjectsApi(self.api_client)
        queue = (KUEUE_GROUP, KUEUE_VERSION)
        table: dict[str, dict[str, Callable[..., Any]]] = {
            "Namespace": {
                "read": lambda ns, name, **kw: core.read_namespace(name, **kw),
                "create": lambda ns, body, **kw: core.create_namespace(body, **kw),
                "patch": lambda ns, name, body, **kw: core.patch_namespace(name, body, **kw),
                "delete": lambda ns, name, **kw: core.delete_namespace(name, **kw),
                "list": lambda ns, sel, **kw: core.list_namespace(label_selector=sel, **kw),
            },
            "RoleBinding": {
                "read": lambda ns, name, **kw: rbac.read_namespaced_role_binding(name, ns, **kw),
                "create": lambda ns, body, **kw: rbac.create_namespaced_role_binding(ns, body, **kw),
                "patch": lambda ns, name, body, **kw: rbac.patch_namespaced_role_binding(name, ns, body, **kw),
                "delete": lambda ns, name, **kw: rbac.delete_namespaced_role_binding(name, ns, **kw),
                "list": lambda ns, sel, **kw: rbac.list_namespaced_role_binding(ns, label_selector=sel, **kw),
            },
            "ResourceQuota": {
                "read": lambda ns, name, **kw: core.read_namespaced_resource_quota(name, ns, **kw),
                "create": lambda ns, body, **kw: core.create_namespaced_resource_quota(ns, body, **kw),
                "patch": lambda ns, name, body, **kw: core.patch_namespaced_resource_quota(name, ns, body, **kw),
                "delete": lambda ns, name, **kw: core.delete_namespaced_resource_quota(name, ns, **kw),
                "list": lambda ns, sel, **kw: core.list_namespaced_resource_quota(ns, label_selector=sel, **kw),
            },
            "LocalQueue": {
                "read": lambda ns, name, **kw: custom.get_namespaced_custom_object(
                    *queue, ns, KUEUE_PLURAL, name, **kw
                ),
                "create": lambda ns, body, **kw: custom.create_namespaced_custom_object(
                    *queue, ns, KUEUE_PLURAL, body, **kw
                ),
                "patch": lambda ns, name, body, **kw: custom.patch_namespaced_custom_object(
                    *queue, ns, KUEUE_PLURAL, name, body, **kw
                ),
                "delete": lambda ns, name, **kw: custom.delete_namespaced_custom_object(
                    *queue, ns, KUEUE_PLURAL, name, **kw
                ),
                "list": lambda ns, sel, **kw: custom.list_namespaced_custom_object(
                    *queue, ns, KUEUE_PLURAL, label_selector=sel, **kw
                ),
            },
        }
        return table[kind]

    @staticmethod
    def _where(kind: str, namespace: str, name: str = "") -> str:
        where = f"{kind} {name}".strip()
        return f"{where} in {namespace}" if KINDS[kind].namespaced else where

    def read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404)."""
        read = self._calls(kind)["read"]
        response = self._send(
            f"read {self._where(kind, namespace, name)}",
            f"read_{kind}",
            lambda **kw: read(namespace, name, **kw),
            tolerate=frozenset({404}),
        )
        if response is None:
            return None
        found: dict[str, Any] = self._json(response)
        return found

    def create_object(self, kind: str, namespace: str, manifest: dict[str, Any]) -> bool:
        """True: created; False: it already exists (409)."""
        create = self._calls(kind)["create"]
        name = manifest.get("metadata", {}).get("name", "?")
        response = self._send(
            f"create {self._where(kind, namespace, name)}",
            f"create_{kind}",
            lambda **kw: create(namespace, manifest, **kw),
            tolerate=frozenset({409}),
        )
        return response is not None

    def patch_object(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (lists are replaced whole: what the sync wants for subjects)."""
        call = self._calls(kind)["patch"]
        response = self._send(
            f"patch {self._where(kind, namespace, name)}",
            f"patch_{kind}",
            lambda **kw: call(namespace, name, patch, _content_type=MERGE_PATCH, **kw),
        )
        patched: dict[str, Any] = self._json(response)
        return patched

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        """False when it was already gone (404)."""
        delete = self._calls(kind)["delete"]
        response = self._send(
            f"delete {self._where(kind, namespace, name)}",
            f"delete_{kind}",
            lambda **kw: delete(namespace, name, **kw),
            tolerate=frozenset({404}),
        )
        return response is not None

    def list_objects(self, kind: str, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        listing = self._calls(kind)["list"]
        response = self._send(
            f"list {kind}s" + (f" in {namespace}" if KINDS[kind].namespaced else ""),
            f"list_{kind}",
            lambda **kw: listing(namespace, label_selector, **kw),
        )
        return self._items(response, label_selector)
