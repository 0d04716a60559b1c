"""Access in the cluster, per Kubernetes-backed project: its namespace, one RoleBinding per
team role, a ResourceQuota on GPUs and (with Kueue) a LocalQueue. `desired()` says what
Plinth wants, `plan()` compares it with what the API server holds, `reconcile()` applies
the plan and records it. Idempotent: a second pass over an unchanged cluster plans nothing.

Who is bound: a direct member is a `User` subject (their username, the name the API
server's OIDC authenticator gives them, with PLINTH_KUBE_USER_PREFIX); an SSO group mapped
to the team is a `Group` subject (PLINTH_KUBE_GROUP_PREFIX), which covers every member
who holds their role through that group. Roles map to the built-in ClusterRoles: viewers
get `view`, members and leads `edit`. A role nobody holds has no binding (removing the
last viewer deletes the viewers' binding; removing one of several drops their subject)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.access.roles import Role
from apps.accounts.models import DIRECT, Membership, SsoGroupMapping
from apps.compute.k8s.rbac import LOCAL_QUEUE, NAMESPACE, RESOURCE_QUOTA, ROLE_BINDING, ObjectApi
from apps.projects.models import Project

MANAGED = "plinth.dev/managed"
RBAC_GROUP = "rbac.authorization.k8s.io"
QUOTA_NAME = "plinth-gpu-quota"
GPU_REQUESTS = "requests.nvidia.com/gpu"
BINDING_NAMES = {Role.VIEWER: "plinth-viewers", Role.MEMBER: "plinth-members", Role.LEAD: "plinth-leads"}
DEFAULT_QUEUE = "plinth"

Obj = dict[str, Any]


def labels(project: Project) -> dict[str, str]:
    return {MANAGED: "true", "plinth.dev/team": project.team.slug, "plinth.dev/project": project.slug}


def cluster_role(role: str) -> str:
    return settings.PLINTH_KUBE_VIEW_CLUSTERROLE if role == Role.VIEWER else settings.PLINTH_KUBE_EDIT_CLUSTERROLE


def queue_name(project: Project) -> str:
    return project.kueue_queue or DEFAULT_QUEUE


def _subjects(role: str, memberships: list[Membership], mappings: list[SsoGroupMapping]) -> list[Obj]:
    groups = sorted({m.group for m in mappings if m.role == role})
    covered = {f"sso:{g}" for g in groups}
    users = sorted(
        m.user.username
        for m in memberships
        if m.role == role and m.user.is_active and (m.source == DIRECT or m.source not in covered)
    )
    return [
        {"kind": "Group", "apiGroup": RBAC_GROUP, "name": settings.PLINTH_KUBE_GROUP_PREFIX + g} for g in groups
    ] + [{"kind": "User", "apiGroup": RBAC_GROUP, "name": settings.PLINTH_KUBE_USER_PREFIX + u} for u in users]


def desired(project: Project) -> list[Obj]:
    """Every object the project's namespace should hold, as manifests (validated by
    kubernetes-validate in the tests; LocalQueue is a Kueue CRD the validator does not know)."""
    ns = project.namespace
    meta_labels = labels(project)
    memberships = list(Membership.objects.filter(team_id=project.team_id).select_related("user"))
    mappings = list(SsoGroupMapping.objects.filter(team_id=project.team_id))
    objects: list[Obj] = [
        {"apiVersion": NAMESPACE.api_version, "kind": "Namespace", "metadata": {"name": ns, "labels": meta_labels}}
    ]
    for role, name in BINDING_NAMES.items():
        subjects = _subjects(role, memberships, mappings)
        if not subjects:
            continue
        objects.append(
            {
                "apiVersion": ROLE_BINDING.api_version,
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns, "labels": {**meta_labels, "plinth.dev/role": role}},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role(role)},
                "subjects": subjects,
            }
        )
    objects.append(
        {
            "apiVersion": RESOURCE_QUOTA.api_version,
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": meta_labels},
            "spec": {"hard": {GPU_REQUESTS: str(project.gpu_quota)}},
        }
    )
    if settings.PLINTH_KUEUE_CLUSTER_QUEUE:
        objects.append(
            {
                "apiVersion": LOCAL_QUEUE.api_version,
                "kind": "LocalQueue",
                "metadata": {"name": queue_name(project), "namespace": ns, "labels": meta_labels},
                "spec": {"clusterQueue": settings.PLINTH_KUEUE_CLUSTER_QUEUE},
            }
        )
    return objects


# --- comparing ---------------------------------------------------------------------------
def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _label_drift(want: Obj, have: Obj) -> dict[str, str]:
    held = have.get("metadata", {}).get("labels") or {}
    return {k: v for k, v in want["metadata"]["labels"].items() if held.get(k) != v}


def _subject_key(subjects: list[Obj] | None) -> list[tuple[str, str]]:
    return sorted((str(s.get("kind")), str(s.get("name"))) for s in subjects or [])


def _spec_view(obj: Obj) -> Any:
    """The part of an object the sync owns (what it compares and what drift reports)."""
    kind = obj.get("kind")
    if kind == "RoleBinding":
        return {"roleRef": obj.get("roleRef"), "subjects": _subject_key(obj.get("subjects"))}
    if kind == "ResourceQuota":
        return {GPU_REQUESTS: ((obj.get("spec") or {}).get("hard") or {}).get(GPU_REQUESTS)}
    if kind == "LocalQueue":
        return {"clusterQueue": (obj.get("spec") or {}).get("clusterQueue")}
    return None


@dataclass
class Change:
    """One step of a plan: create, patch, replace (delete + create: a RoleBinding's roleRef
    cannot be changed) or delete one object."""

    action: str
    kind: str
    name: str
    reason: str
    manifest: Obj | None = None
    patch: Obj = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, "kind": self.kind, "name": self.name, "reason": self.reason}


def plan(project: Project, api: ObjectApi, objects: list[Obj] | None = None) -> list[Change]:
    """What it takes to make the cluster match `desired(project)` (reads only)."""
    objects = desired(project) if objects is None else objects
    ns = project.namespace
    changes: list[Change] = []
    for want in objects:
        kind, name = want["kind"], _name(want)
        have = api.read_object(kind, ns, name)
        if have is None:
            changes.append(Change("create", kind, name, f"{kind} {name} is missing", manifest=want))
            continue
        patch: Obj = {}
        reasons = []
        if stale := _label_drift(want, have):
            patch["metadata"] = {"labels": want["metadata"]["labels"]}
            reasons.append(f"labels differ ({', '.join(sorted(stale))})")
        if _spec_view(want) != _spec_view(have):
            if kind == "RoleBinding" and want["roleRef"] != have.get("roleRef"):
                changes.append(
                    Change("replace", kind, name, f"roleRef is {have.get('roleRef', {}).get('name')}", manifest=want)
                )
                continue
            if kind == "RoleBinding":
                patch["subjects"] = want["subjects"]
                reasons.append(f"subjects are {[n for _, n in _subject_key(have.get('subjects'))]}")
            else:
                patch["spec"] = want["spec"]
                reasons.append(f"spec is {_spec_view(have)}")
        if patch:
            changes.append(Change("patch", kind, name, "; ".join(reasons), manifest=want, patch=patch))
    wanted_bindings = {_name(o) for o in objects if o["kind"] == "RoleBinding"}
    for binding in api.list_objects("RoleBinding", ns, f"{MANAGED}=true"):
        if _name(binding) not in wanted_bindings:
            changes.append(Change("delete", "RoleBinding", _name(binding), "nobody holds this role any more"))
    return changes


def apply(project: Project, api: ObjectApi, changes: list[Change]) -> None:
    ns = project.namespace
    for change in changes:
        if change.action == "create":
            assert change.manifest is not None
            if not api.create_object(change.kind, ns, change.manifest):
                # Someone made it between our read and our create: bring it in line instead.
                api.patch_object(change.kind, ns, change.name, _owned_fields(change.manifest))
        elif change.action == "patch":
            api.patch_object(change.kind, ns, change.name, change.patch)
        elif change.action == "replace":
            assert change.manifest is not None
            api.delete_object(change.kind, ns, change.name)
            api.create_object(change.kind, ns, change.manifest)
        elif change.action == "delete":
            api.delete_object(change.kind, ns, change.name)


def _owned_fields(manifest: Obj) -> Obj:
    return {k: v for k, v in manifest.items() if k not in {"apiVersion", "kind"}}


def snapshot(objects: list[Obj]) -> dict[str, Any]:
    """The desired state in a comparable, storable form (SyncState.applied): the JSON
    round trip turns tuples into lists, as reading the row back would."""
    view = {f"{o['kind']}/{_name(o)}": [o["metadata"].get("labels"), _spec_view(o)] for o in objects}
    loaded: dict[str, Any] = json.loads(json.dumps(view))
    return loaded
