"""A FAKE API server for the access sync (apps.compute.k8s.rbac.ObjectApi): namespaces,
RoleBindings, ResourceQuotas and Kueue LocalQueues, stored per namespace, with the API
server's answers where the sync relies on them:

- create: 409 (False) when the name exists; 404 (BackendRejected) when the namespace of a
  namespaced object does not exist; every manifest validated against the real OpenAPI
  schema with kubernetes-validate in strict mode (a 422 otherwise), LocalQueue (a Kueue
  CRD kubernetes-validate has no schema for) against LOCAL_QUEUE_SCHEMA below, written
  from Kueue's v1beta1 CRD (spec.clusterQueue, stopPolicy, fairSharing; nothing else);
- patch: RFC 7386 JSON merge patch (lists replaced whole), 404 when missing; a patch that
  changes a RoleBinding's roleRef is refused (422: roleRef is immutable);
- delete: False when gone (404); deleting a namespace deletes what it holds;
- list: label selectors honoured.

`edit()` changes an object behind Plinth's back (what `kubectl edit` would), for drift."""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from typing import Any

import jsonschema
import kubernetes_validate

from apps.compute.base import BackendRejected
from apps.compute.k8s import selector_matches
from apps.compute.k8s.rbac import KINDS

Obj = dict[str, Any]
SCHEMA_VERSION = kubernetes_validate.latest_version()

LOCAL_QUEUE_SCHEMA: Obj = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kueue.x-k8s.io/v1beta1"},
        "kind": {"const": "LocalQueue"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["clusterQueue"],
            "properties": {
                "clusterQueue": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "stopPolicy": {"enum": ["None", "Hold", "HoldAndDrain"]},
                "fairSharing": {"type": "object"},
            },
        },
        "status": {"type": "object"},
    },
}


def validate_manifest(manifest: Obj) -> None:
    """The API server's schema check (raises ValueError with the reason)."""
    if manifest.get("kind") == "LocalQueue":
        try:
            jsonschema.validate(manifest, LOCAL_QUEUE_SCHEMA)
        except jsonschema.ValidationError as exc:
            raise ValueError(exc.message) from exc
        return
    try:
        kubernetes_validate.validate(manifest, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise ValueError(exc.message) from exc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeAccessGateway:
    """A stateful, in-memory ObjectApi (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (kind, namespace, name) -> object
        self.calls: Counter[str] = Counter()
        self.writes: list[tuple[str, str, str, str]] = []  # (verb, kind, namespace, name)
        self.outage: Exception | None = None
        self._versions = itertools.count(1)

    def _enter(self, verb: str, kind: str) -> None:
        self.calls[f"{verb}_{kind}"] += 1
        if self.outage is not None:
            raise self.outage

    @staticmethod
    def _ns(kind: str, namespace: str) -> str:
        return namespace if KINDS[kind].namespaced else ""

    def read_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        self._enter("read", kind)
        found = self.objects.get((kind, self._ns(kind, namespace), name))
        return copy.deepcopy(found) if found is not None else None

    def create_object(self, kind: str, namespace: str, manifest: Obj) -> bool:
        self._enter("create", kind)
        try:
            validate_manifest(manifest)
        except ValueError as exc:
            raise BackendRejected(f"The Kubernetes API server refused to create {kind}: {exc}") from exc
        name = manifest["metadata"]["name"]
        ns = self._ns(kind, namespace)
        if ns and ("Namespace", "", ns) not in self.objects:
            raise BackendRejected(f'The Kubernetes API server refused to create {kind}: namespaces "{ns}" not found')
        if (kind, ns, name) in self.objects:
            return False
        obj = copy.deepcopy(manifest)
        meta = obj["metadata"]
        if ns:
            meta["namespace"] = ns
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, ns, name)] = obj
        self.writes.append(("create", kind, ns, name))
        return True

    def patch_object(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        self._enter("patch", kind)
        key = (kind, self._ns(kind, namespace), name)
        if key not in self.objects:
            raise BackendRejected(f"The Kubernetes API server refused to patch {kind} {name}: not found")
        current = self.objects[key]
        patched = merge_patch(current, patch)
        if kind == "RoleBinding" and patched.get("roleRef") != current.get("roleRef"):
            raise BackendRejected("The Kubernetes API server refused to patch RoleBinding: roleRef is immutable")
        checked = {k: v for k, v in patched.items() if k != "status"}
        checked["metadata"] = {k: v for k, v in patched["metadata"].items() if k != "resourceVersion"}
        try:
            validate_manifest(checked)
        except ValueError as exc:
            raise BackendRejected(f"The Kubernetes API server refused to patch {kind} {name}: {exc}") from exc
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = patched
        self.writes.append(("patch", kind, key[1], name))
        return copy.deepcopy(patched)

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        self._enter("delete", kind)
        ns = self._ns(kind, namespace)
        if self.objects.pop((kind, ns, name), None) is None:
            return False
        if kind == "Namespace":
            for key in [k for k in self.objects if k[1] == name]:
                del self.objects[key]
        self.writes.append(("delete", kind, ns, name))
        return True

    def list_objects(self, kind: str, namespace: str, label_selector: str = "") -> list[Obj]:
        self._enter("list", kind)
        ns = self._ns(kind, namespace)
        return [
            copy.deepcopy(obj)
            for (k, n, _), obj in sorted(self.objects.items())
            if k == kind and n == ns and selector_matches(obj["metadata"].get("labels"), label_selector)
        ]

    # --- what people do by hand ----------------------------------------------------------------
    def edit(self, kind: str, namespace: str, name: str, change: Obj) -> None:
        key = (kind, self._ns(kind, namespace), name)
        self.objects[key] = merge_patch(self.objects[key], change)

    def names(self, kind: str, namespace: str = "") -> list[str]:
        return sorted(n for (k, ns, n) in self.objects if k == kind and ns == self._ns(kind, namespace))
