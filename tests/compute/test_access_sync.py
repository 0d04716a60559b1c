"""The access sync to the cluster: a namespace per Kubernetes-backed project, a RoleBinding
per team role, a GPU ResourceQuota, a Kueue LocalQueue; drift repaired with an audit event;
a removed member loses their binding. Run against the stateful fake (tests/compute/
fakes_rbac.py) and, through the REAL kubernetes client (AccessGateway), against kmock's
KubernetesEmulator over HTTP. Every manifest passes kubernetes-validate in strict mode
(LocalQueue, a CRD the validator does not know, passes the fake's schema of Kueue's CRD).

kmock gaps beyond those test_kubernetes_emulator.py lists:
- Namespace objects cannot be emulated: kmock 0.8 parses `/api/v1/namespaces[/<name>]` as
  the namespace prefix of a namespaced path (a create answers 500). The kmock leg keeps
  namespaces in the fake (KmockGateway below) and sends everything else over HTTP; a
  separate test checks the real client's namespace requests against a canned route;
- it does not refuse objects in a namespace that does not exist, nor a roleRef change
  (the fake does both)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.audit.models import AuditEvent
from apps.compute.base import BackendUnavailable
from apps.compute.k8s import RateLimiter
from apps.compute.k8s.rbac import AccessGateway, ObjectApi
from apps.console import cluster_sync, sync
from apps.console.models import SyncState, SyncStatus
from apps.projects import services as project_services
from apps.projects.models import Backend, Project
from tests.compute.fakes_rbac import FakeAccessGateway, validate_manifest
from tests.compute.kmock_server import Emulator
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db

NS = "plinth-demo-demo"
KMOCK_RESOURCES = {
    "v1/namespaces": ("Namespace", False),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
    "v1/resourcequotas": ("ResourceQuota", True),
    "kueue.x-k8s.io/v1beta1/localqueues": ("LocalQueue", True),
}


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    import kmock

    running = Emulator()

    def register(k: Any) -> None:
        for resource, (kind, namespaced) in KMOCK_RESOURCES.items():
            k.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)

    running.call(register)
    try:
        yield running
    finally:
        running.close()


class KmockGateway(AccessGateway):
    """The real client against kmock, except for Namespace objects (see the module docstring)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator.api_client(), limiter=RateLimiter(1000), timeout=5)
        self.namespaces = FakeAccessGateway()

    def read_object(self, kind: str, namespace: str, name: str) -> Any:
        if kind == "Namespace":
            return self.namespaces.read_object(kind, namespace, name)
        return super().read_object(kind, namespace, name)

    def create_object(self, kind: str, namespace: str, manifest: Any) -> bool:
        if kind == "Namespace":
            return self.namespaces.create_object(kind, namespace, manifest)
        validate_manifest(manifest)  # kmock accepts anything: hold the manifests to the real schema here
        return super().create_object(kind, namespace, manifest)

    def patch_object(self, kind: str, namespace: str, name: str, patch: Any) -> Any:
        if kind == "Namespace":
            return self.namespaces.patch_object(kind, namespace, name, patch)
        return super().patch_object(kind, namespace, name, patch)

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        if kind == "Namespace":
            return self.namespaces.delete_object(kind, namespace, name)
        return super().delete_object(kind, namespace, name)


@pytest.fixture(params=["fake", "kmock"])
def api(request: pytest.FixtureRequest) -> ObjectApi:
    if request.param == "fake":
        return FakeAccessGateway()
    return KmockGateway(request.getfixturevalue("emulator"))


@pytest.fixture(autouse=True)
def _sync_on(settings: Any) -> None:
    settings.PLINTH_KUBE_ACCESS_SYNC = True
    settings.PLINTH_KUEUE_CLUSTER_QUEUE = ""


@pytest.fixture
def kproject(project: Project, ada: User, lin: User, vic: User) -> Project:
    Project.objects.filter(pk=project.pk).update(backend=Backend.KUBERNETES)
    project.refresh_from_db()
    return project


def subjects(api: ObjectApi, name: str) -> list[tuple[str, str]]:
    binding = api.read_object("RoleBinding", NS, name)
    assert binding is not None, f"{name} is missing"
    return sorted((s["kind"], s["name"]) for s in binding["subjects"])


def test_the_first_pass_creates_namespace_bindings_and_quota(api: ObjectApi, kproject: Project) -> None:
    state = sync.sync_cluster(kproject, api)
    assert state is not None and state.status == SyncStatus.IN_SYNC, state and state.message
    namespace = api.read_object("Namespace", "", NS)
    assert namespace is not None
    assert namespace["metadata"]["labels"] == {
        "plinth.dev/managed": "true",
        "plinth.dev/team": "demo",
        "plinth.dev/project": "demo",
    }
    assert subjects(api, "plinth-viewers") == [("User", "vic")]
    assert subjects(api, "plinth-members") == [("User", "ada")]
    assert subjects(api, "plinth-leads") == [("User", "lin")]
    roles = {n: api.read_object("RoleBinding", NS, n)["roleRef"]["name"] for n in cluster_sync.BINDING_NAMES.values()}  # type: ignore[index]
    assert roles == {"plinth-viewers": "view", "plinth-members": "edit", "plinth-leads": "edit"}
    quota = api.read_object("ResourceQuota", NS, "plinth-gpu-quota")
    assert quota is not None and quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "2"}
    assert AuditEvent.objects.filter(verb="cluster.synced", project_id=kproject.pk).count() == 1


def test_a_second_pass_changes_nothing(api: ObjectApi, kproject: Project) -> None:
    sync.sync_cluster(kproject, api)
    assert cluster_sync.plan(kproject, api) == []
    state = sync.sync_cluster(kproject, api)
    assert state is not None and (state.status, state.message) == (SyncStatus.IN_SYNC, "In sync.")
    assert AuditEvent.objects.filter(verb__startswith="cluster.").count() == 1


def test_drift_made_by_hand_is_repaired_with_an_audit_event(api: ObjectApi, kproject: Project) -> None:
    sync.sync_cluster(kproject, api)
    # By hand: raise the quota, add someone to the leads' binding, drop a label, delete the viewers' binding.
    api.patch_object("ResourceQuota", NS, "plinth-gpu-quota", {"spec": {"hard": {"requests.nvidia.com/gpu": "64"}}})
    intruder = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}
    lead_subjects = api.read_object("RoleBinding", NS, "plinth-leads")["subjects"]  # type: ignore[index]
    api.patch_object("RoleBinding", NS, "plinth-leads", {"subjects": [*lead_subjects, intruder]})
    api.patch_object("Namespace", "", NS, {"metadata": {"labels": {"plinth.dev/team": "someone-else"}}})
    api.delete_object("RoleBinding", NS, "plinth-viewers")
    drift = {(c["kind"], c["name"]) for c in sync.live_cluster_plan(kproject, api)}
    assert drift == {
        ("ResourceQuota", "plinth-gpu-quota"),
        ("RoleBinding", "plinth-leads"),
        ("Namespace", NS),
        ("RoleBinding", "plinth-viewers"),
    }

    state = sync.sync_cluster(kproject, api)
    assert state is not None and state.status == SyncStatus.REPAIRED
    assert {(d["kind"], d["name"]) for d in state.drift} == drift
    assert api.read_object("ResourceQuota", NS, "plinth-gpu-quota")["spec"]["hard"] == {  # type: ignore[index]
        "requests.nvidia.com/gpu": "2"
    }
    assert subjects(api, "plinth-leads") == [("User", "lin")]
    assert subjects(api, "plinth-viewers") == [("User", "vic")]
    assert api.read_object("Namespace", "", NS)["metadata"]["labels"]["plinth.dev/team"] == "demo"  # type: ignore[index]
    event = AuditEvent.objects.get(verb="cluster.drift_repaired")
    assert event.project_id == kproject.pk and event.actor_label == "system"
    assert len(event.after["changes"]) == 4  # type: ignore[index]
    assert cluster_sync.plan(kproject, api) == []


def test_removing_members_removes_their_bindings(
    api: ObjectApi, kproject: Project, lin: User, team: Team, django_capture_on_commit_callbacks: Any
) -> None:
    sync.sync_cluster(kproject, api)
    bea = make_user("bea")
    Membership.objects.create(team=team, user=bea, role=Role.MEMBER)
    sync.sync_cluster(kproject, api)
    assert subjects(api, "plinth-members") == [("User", "ada"), ("User", "bea")]

    account_services.remove_member(lin, Membership.objects.get(team=team, user__username="vic"))
    account_services.remove_member(lin, Membership.objects.get(team=team, user__username="ada"))
    state = sync.sync_cluster(kproject, api)
    assert state is not None and state.status == SyncStatus.IN_SYNC  # a change made in Plinth is not drift
    assert api.read_object("RoleBinding", NS, "plinth-viewers") is None  # nobody is a viewer any more
    assert subjects(api, "plinth-members") == [("User", "bea")]
    event = AuditEvent.objects.filter(verb="cluster.synced").latest("id")
    assert {
        "action": "delete",
        "kind": "RoleBinding",
        "name": "plinth-viewers",
        "reason": "nobody holds this role any more",
    } in event.after["changes"]  # type: ignore[index]


def test_sso_groups_are_group_subjects_and_deactivated_users_lose_their_binding(
    api: ObjectApi, kproject: Project, root: User, team: Team, ada: User
) -> None:
    SsoGroupMapping.objects.create(team=team, group="ml-team", role=Role.MEMBER)
    carol = make_user("carol")
    Membership.objects.create(team=team, user=carol, role=Role.MEMBER, source="sso:ml-team")
    sync.sync_cluster(kproject, api)
    # carol holds her role through the group: the Group subject covers her.
    assert subjects(api, "plinth-members") == [("Group", "ml-team"), ("User", "ada")]
    account_services.deactivate_user(root, ada)
    sync.sync_cluster(kproject, api)
    assert subjects(api, "plinth-members") == [("Group", "ml-team")]


def test_quota_changes_and_kueue_queue_reach_the_cluster(
    api: ObjectApi, kproject: Project, lin: User, settings: Any
) -> None:
    settings.PLINTH_KUEUE_CLUSTER_QUEUE = "gpu-cluster-queue"
    project_services.update_project(lin, kproject, gpu_quota=5)
    kproject.refresh_from_db()
    sync.sync_cluster(kproject, api)
    assert api.read_object("ResourceQuota", NS, "plinth-gpu-quota")["spec"]["hard"] == {  # type: ignore[index]
        "requests.nvidia.com/gpu": "5"
    }
    queue = api.read_object("LocalQueue", NS, "plinth")
    assert queue is not None and queue["spec"] == {"clusterQueue": "gpu-cluster-queue"}


def test_every_manifest_the_sync_builds_is_valid(kproject: Project, settings: Any, team: Team) -> None:
    settings.PLINTH_KUEUE_CLUSTER_QUEUE = "gpu-cluster-queue"
    settings.PLINTH_KUBE_USER_PREFIX = "oidc:"
    SsoGroupMapping.objects.create(team=team, group="ml-viewers", role=Role.VIEWER)
    objects = cluster_sync.desired(kproject)
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "RoleBinding",
        "RoleBinding",
        "RoleBinding",
        "ResourceQuota",
        "LocalQueue",
    ]
    for manifest in objects:
        validate_manifest(manifest)  # kubernetes-validate strict (LocalQueue: Kueue's CRD schema)
    with pytest.raises(ValueError, match="Additional properties"):
        validate_manifest({**objects[1], "subject": []})  # strict mode catches a typo


def test_an_outage_is_recorded_and_shown_on_the_project_page(
    kproject: Project, vic: User, lin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAccessGateway()
    fake.outage = BackendUnavailable("The Kubernetes API server could not be reached to read Namespace")
    monkeypatch.setattr(sync, "cluster_api", lambda: fake)
    [state] = sync.sync_project(kproject.pk)
    assert state.status == SyncStatus.ERROR and "could not be reached" in state.message
    page = client_for(vic).get("/projects/demo/demo/")
    assert b"could not be reached" in page.content
    fake.outage = None
    sync.sync_project(kproject.pk)
    assert SyncState.objects.get(project=kproject, target="cluster").status == SyncStatus.IN_SYNC


def test_the_project_page_shows_drift_before_the_next_pass_repairs_it(
    kproject: Project, lin: User, vic: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAccessGateway()
    monkeypatch.setattr(sync, "cluster_api", lambda: fake)
    sync.sync_project(kproject.pk)
    fake.edit("ResourceQuota", NS, "plinth-gpu-quota", {"spec": {"hard": {"requests.nvidia.com/gpu": "64"}}})
    fragment = client_for(lin).get("/projects/demo/demo/?check=1", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="access")
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert body.lstrip().startswith('<section class="card" id="access"')
    assert "The cluster differs from Plinth" in body and "plinth-gpu-quota" in body
    # A viewer sees the recorded state, but cannot make the page read the cluster.
    as_viewer = client_for(vic).get("/projects/demo/demo/?check=1", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="access")
    assert as_viewer.status_code == 200 and 'id="access"' in as_viewer.content.decode()
    assert "The cluster differs" not in as_viewer.content.decode()
    # Without htmx, the same check is on the project page itself.
    assert "The cluster differs" in client_for(lin).get("/projects/demo/demo/?check=1").content.decode()
    sync.sync_project(kproject.pk)
    again = client_for(lin).get("/projects/demo/demo/?check=1", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="access")
    assert "The cluster matches Plinth" in again.content.decode()
    page = client_for(lin).get("/projects/demo/demo/").content.decode()
    assert "Drift repaired" in page


def test_changes_in_plinth_send_the_sync_task_after_commit(
    kproject: Project, lin: User, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.console import scheduling

    sent: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(scheduling, "enqueue_on_commit", lambda task, *a: sent.append((task.name, a)))
    make_user("newcomer")
    account_services.add_member(lin, team, username="newcomer", role=Role.VIEWER)
    project_services.update_project(lin, kproject, gpu_quota=3)
    assert sent == [
        ("apps.console.tasks.sync_team_access", (team.pk,)),
        ("apps.console.tasks.sync_project_access", (kproject.pk,)),
    ]


def test_the_reconciler_task_syncs_every_kubernetes_project(
    kproject: Project, other_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.console.tasks import reconcile_access

    fake = FakeAccessGateway()
    monkeypatch.setattr(sync, "cluster_api", lambda: fake)
    assert reconcile_access() == 1  # other/other runs on the local backend: nothing to sync
    assert fake.names("Namespace") == [NS]


def test_the_real_client_reads_namespaces(emulator: Emulator) -> None:
    """Reading works over HTTP (a canned route: kmock cannot store namespaces, and cannot
    even parse a POST to /api/v1/namespaces, so creating one is covered by the fake only)."""
    held = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"a": "b"}}}
    gateway = AccessGateway(emulator.api_client(), limiter=RateLimiter(1000), timeout=5)
    assert gateway.read_object("Namespace", "", NS) is None  # 404
    emulator.call(lambda k: k[f"get /api/v1/namespaces/{NS}"] << held)
    assert gateway.read_object("Namespace", "", NS) == held
    assert [r.url.path for r in emulator.requests() if r.method == "GET"] == [f"/api/v1/namespaces/{NS}"] * 2


def test_patches_are_json_merge_patches(emulator: Emulator, kproject: Project) -> None:
    gateway = KmockGateway(emulator)
    sync.sync_cluster(kproject, gateway)
    gateway.patch_object("ResourceQuota", NS, "plinth-gpu-quota", {"spec": {"hard": {"requests.nvidia.com/gpu": "3"}}})
    patch = [r for r in emulator.requests() if r.method == "PATCH"][-1]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.url.path == f"/api/v1/namespaces/{NS}/resourcequotas/plinth-gpu-quota"
