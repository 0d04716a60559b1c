"""Idle detection and the idle policy, minute by minute through real sampler passes (a fake
cluster says who holds which GPU, a static metrics source how busy each is): under the
threshold for the window is flagged, a spike is not, the owner is told, the launch is
reclaimed after the grace period where the policy says so, and exemptions hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.compute.k8s.manifests import job_labels
from apps.core.errors import NotAllowed
from apps.gpus import services
from apps.gpus.config import Sources
from apps.gpus.idle import detect
from apps.gpus.models import FindingStatus, IdleFinding
from apps.gpus.sampler import run_pass
from apps.gpus.sources.kubernetes import KubernetesSource
from apps.launches.models import Launch, Status
from apps.notifications.models import Notification
from apps.projects.models import Project
from tests.compute.fakes import make_launch
from tests.gpus.conftest import Clock, Sent
from tests.gpus.fakes import GpuFakeCluster, StaticMetrics

pytestmark = pytest.mark.django_db
NODE = "gpu-node-1"


class Fleet:
    """A node of 4 GPUs; launches' pods take them in order. `minutes(n, util)` runs n sampler
    passes (one a minute) with each GPU's utilization from `util(index, minute)`, and idle
    detection after each."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.cluster = GpuFakeCluster()
        self.cluster.add_node(NODE, gpus=4)
        self.metrics = StaticMetrics()
        self.sources = Sources(cluster=KubernetesSource(self.cluster), metrics=[self.metrics])
        self.minute = 0
        self.counts: list[dict[str, int]] = []

    def hold(self, launch: Launch, gpus: int) -> None:
        self.cluster.add_gpu_pod(launch.project.namespace, f"plinth-{launch.pk}-abcde", NODE, gpus, job_labels(launch))

    def minutes(self, count: int, util: Callable[[int, int], float | None]) -> dict[str, int]:
        for _ in range(count):
            self.minute += 1
            for index in range(4):
                self.metrics.set(NODE, index, util(index, self.minute))
            now = self.clock.tick()
            run_pass(self.sources, now=now)
            self.counts.append(detect(now))
        return self.counts[-1]


@pytest.fixture
def fleet(clock: Clock) -> Fleet:
    return Fleet(clock)


@pytest.fixture
def launch(project: Project, ada: User) -> Launch:
    return make_launch(project, ada, status=Status.RUNNING, gpus=1)


def flat(value: float) -> Callable[[int, int], float]:
    return lambda index, minute: value


def test_a_gpu_under_the_threshold_for_the_window_is_flagged_and_its_owner_told(
    fleet: Fleet, launch: Launch, django_capture_on_commit_callbacks: Any
) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(29, flat(2.0))
    assert not IdleFinding.objects.exists(), "flagged before the window was full"
    with django_capture_on_commit_callbacks(execute=True):  # the notice is mailed after commit
        counts = fleet.minutes(1, flat(2.0))
    assert counts["opened"] == 1 and counts["notified"] == 1
    finding = IdleFinding.objects.get()
    assert (finding.gpu.label, finding.launch_id, finding.status) == (f"{NODE}/0", launch.pk, FindingStatus.NOTIFIED)
    assert finding.peak_utilization == 2.0
    assert [m.to for m in mail.outbox] == [["ada@example.test"]]
    body = mail.outbox[0].body
    assert launch.job_name in body and "gpu-node-1/0" in body and f"/launches/{launch.pk}/" in body
    notice = Notification.objects.get()
    assert (
        notice.verb == "gpu.idle" and notice.payload["gpus"] == ["gpu-node-1/0"] and notice.team == launch.project.team
    )
    assert AuditEvent.objects.filter(verb="gpu.idle.notified", actor_label="system").count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        fleet.minutes(5, flat(2.0))
    assert len(mail.outbox) == 1, "the owner is told once"
    assert IdleFinding.objects.get().idle_for.total_seconds() == pytest.approx(34 * 60, abs=60)


def test_a_gpu_that_spikes_is_not_idle(fleet: Fleet, launch: Launch) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(40, lambda index, minute: 40.0 if minute == 20 else 2.0)
    assert not IdleFinding.objects.exists()
    fleet.minutes(10, flat(2.0))  # 30 quiet minutes after the spike
    assert IdleFinding.objects.active().count() == 1


def test_a_finding_is_resolved_when_the_gpu_gets_busy_again(fleet: Fleet, launch: Launch) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(30, flat(0.0))
    counts = fleet.minutes(1, flat(60.0))
    assert counts["resolved"] == 1
    finding = IdleFinding.objects.get()
    assert finding.status == FindingStatus.RESOLVED and finding.resolution == "busy again (peak 60 %)"


def test_missing_samples_prove_nothing(fleet: Fleet, launch: Launch) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(30, lambda index, minute: None)  # held, but no metrics source measured it
    assert not IdleFinding.objects.exists()


def test_reclaim_comes_after_the_notice_and_the_grace_period(
    fleet: Fleet, launch: Launch, lin: User, sent_tasks: Sent, django_capture_on_commit_callbacks: Any
) -> None:
    services.set_idle_policy(lin, launch.project, reclaim=True, grace_minutes=10, window_minutes=30)
    fleet.hold(launch, 1)
    with django_capture_on_commit_callbacks(execute=True):
        fleet.minutes(30, flat(1.0))
    notified_at = IdleFinding.objects.get().notified_at
    assert notified_at is not None and len(mail.outbox) == 1
    assert "cancelled after 10 minutes" in mail.outbox[0].body
    fleet.minutes(9, flat(1.0))
    launch.refresh_from_db()
    assert launch.status == Status.RUNNING, "reclaimed before the grace period ended"
    with django_capture_on_commit_callbacks(execute=True):
        counts = fleet.minutes(1, flat(1.0))
    assert counts["reclaimed"] == 1
    launch.refresh_from_db()
    assert launch.status == Status.CANCELLING
    assert launch.status_reason.startswith("reclaimed by the idle GPU policy of demo/demo")
    assert IdleFinding.objects.get().status == FindingStatus.RECLAIMED
    assert sent_tasks.tasks == [("cancel_on_backend", (launch.pk,))]
    events = AuditEvent.objects.filter(target_type="launches.launch", target_id=str(launch.pk)).order_by("id")
    assert [(e.verb, e.actor_label) for e in events] == [
        ("gpu.idle.notified", "system"),
        ("launch.cancelled", "system"),
        ("gpu.idle.reclaimed", "system"),
    ]
    assert "reclaimed by the idle GPU policy" in (events[1].after or {})["reason"]
    with django_capture_on_commit_callbacks(execute=True):
        fleet.minutes(2, flat(1.0))  # the pod is still there while the backend cancels it
    assert sent_tasks.tasks == [("cancel_on_backend", (launch.pk,))], "reclaimed twice"
    assert [m.subject for m in mail.outbox] == [f"Idle GPUs: {launch.job_name}", f"Reclaimed: {launch.job_name}"]
    assert IdleFinding.objects.count() == 1, "flagged again while cancelling"


def test_without_reclaim_in_the_policy_the_launch_keeps_running(fleet: Fleet, launch: Launch) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(200, flat(0.0))
    launch.refresh_from_db()
    assert launch.status == Status.RUNNING
    assert IdleFinding.objects.get().status == FindingStatus.NOTIFIED


def test_a_launch_with_one_busy_gpu_is_told_but_not_reclaimed(
    fleet: Fleet, project: Project, ada: User, lin: User
) -> None:
    services.set_idle_policy(lin, project, reclaim=True, grace_minutes=0)
    launch = make_launch(project, ada, status=Status.RUNNING, gpus=2)
    fleet.hold(launch, 2)
    fleet.minutes(40, lambda index, minute: 90.0 if index == 0 else 0.0)
    launch.refresh_from_db()
    assert launch.status == Status.RUNNING
    assert [(f.gpu.label, f.status) for f in IdleFinding.objects.all()] == [(f"{NODE}/1", FindingStatus.NOTIFIED)]


def test_an_exempt_launch_is_listed_but_never_told_nor_reclaimed(
    fleet: Fleet, launch: Launch, lin: User, django_capture_on_commit_callbacks: Any
) -> None:
    services.set_idle_policy(lin, launch.project, reclaim=True, grace_minutes=0)
    services.exempt_launch(lin, launch, "interactive debugging session")
    fleet.hold(launch, 1)
    with django_capture_on_commit_callbacks(execute=True):
        fleet.minutes(45, flat(0.0))
    launch.refresh_from_db()
    assert launch.status == Status.RUNNING and not mail.outbox
    assert IdleFinding.objects.get().status == FindingStatus.EXEMPT
    assert AuditEvent.objects.filter(verb="gpu.idle_exemption.granted", actor_label="lin").count() == 1
    # The exemption ends: the policy applies from the next pass (grace 0: notice and reclaim).
    with django_capture_on_commit_callbacks(execute=True):
        assert services.remove_exemption(lin, launch) is True
        fleet.minutes(1, flat(0.0))
    assert [m.subject for m in mail.outbox] == [f"Idle GPUs: {launch.job_name}", f"Reclaimed: {launch.job_name}"]
    launch.refresh_from_db()
    assert launch.status == Status.CANCELLING


def test_only_a_lead_may_exempt(launch: Launch, ada: User) -> None:
    with pytest.raises(NotAllowed):
        services.exempt_launch(ada, launch, "mine")


def test_pods_outside_plinth_are_flagged_but_left_alone(fleet: Fleet, project: Project) -> None:
    fleet.cluster.add_gpu_pod("research", "notebook-0", NODE, 1)
    fleet.minutes(31, flat(0.0))
    finding = IdleFinding.objects.get()
    assert (finding.launch_id, finding.namespace, finding.pod, finding.status) == (
        None,
        "research",
        "notebook-0",
        FindingStatus.OPEN,
    )
    assert not mail.outbox


def test_a_released_gpu_resolves_its_finding(fleet: Fleet, launch: Launch) -> None:
    fleet.hold(launch, 1)
    fleet.minutes(31, flat(0.0))
    del fleet.cluster.pods[launch.project.namespace][f"plinth-{launch.pk}-abcde"]
    fleet.minutes(1, flat(0.0))
    assert IdleFinding.objects.get().resolution == "the GPU was released"


def test_each_projects_policy_sets_its_own_threshold_and_window(
    fleet: Fleet, project: Project, other_project: Project, ada: User, omar: User, root: User
) -> None:
    services.set_idle_policy(root, other_project, threshold_percent=50, window_minutes=10)
    strict = make_launch(other_project, omar, status=Status.RUNNING, gpus=1)
    loose = make_launch(project, ada, status=Status.RUNNING, gpus=1)
    fleet.hold(strict, 1)
    fleet.hold(loose, 1)
    fleet.minutes(12, lambda index, minute: 30.0)  # busy by the default, idle by other's policy
    assert [(f.launch_id, f.threshold_percent, f.window_minutes) for f in IdleFinding.objects.all()] == [
        (strict.pk, 50, 10)
    ]
