"""The Kubernetes backend against a stateful fake cluster: submit, every state and reason poll
reports, the cost of poll, logs, cancel, inventory; and the client-side rate limiter."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from apps.accounts.models import User
from apps.compute.base import Backend, BackendRejected, BackendUnavailable, GpuDevice, Observation
from apps.compute.k8s import KubernetesBackend, RateLimiter, build_job_manifest, selector_matches
from apps.compute.registry import get_backend
from apps.launches.models import Launch
from apps.projects.models import Backend as ProjectBackend
from apps.projects.models import Project
from tests.compute.fakes import GPU_MODEL, FakeKubeGateway, JobController, make_launch

pytestmark = pytest.mark.django_db

NS = "plinth-demo-demo"
OTHER_NS = "plinth-other-other"
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
QUOTA = "exceeded quota: gpu, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: 2"


@pytest.fixture
def cluster() -> FakeKubeGateway:
    return FakeKubeGateway()


@pytest.fixture
def controller(cluster: FakeKubeGateway) -> JobController:
    return JobController(cluster)


@pytest.fixture
def backend(cluster: FakeKubeGateway) -> KubernetesBackend:
    return KubernetesBackend(cluster)


@pytest.fixture
def launch(project: Project, lin: User) -> Launch:
    return make_launch(project, lin)


def seen(backend: KubernetesBackend, launch: Launch) -> Observation:
    return backend.poll([launch])[launch.pk]


def submitted(backend: KubernetesBackend, launch: Launch) -> str:
    backend.submit(launch)
    return launch.job_name


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_project_that_chooses_kubernetes_is_served_by_this_backend(backend: KubernetesBackend) -> None:
    conforming: Backend = backend  # mypy checks the shape; this checks the name round-trips
    # The name a backend reports is what projects and launches store, and the registry maps
    # that stored value back to this class: a renamed backend would orphan every launch on it.
    assert conforming.name in ProjectBackend.values
    get_backend.cache_clear()
    try:
        assert type(get_backend(conforming.name)) is KubernetesBackend
        assert type(get_backend(ProjectBackend.KUBERNETES)) is KubernetesBackend
    finally:
        get_backend.cache_clear()


# --- submit ----------------------------------------------------------------------------------------
def test_submit_creates_the_job_the_manifest_describes(
    backend: KubernetesBackend, cluster: FakeKubeGateway, launch: Launch
) -> None:
    backend.submit(launch)
    job = cluster.jobs[NS][launch.job_name]
    expected = build_job_manifest(launch)
    assert job["spec"] == expected["spec"]
    assert job["metadata"]["labels"] == expected["metadata"]["labels"]


def test_submitting_twice_creates_one_job_and_both_count_as_success(
    backend: KubernetesBackend, cluster: FakeKubeGateway, launch: Launch
) -> None:
    backend.submit(launch)
    backend.submit(launch)  # a worker crashed after the create, or the reconciler resubmits
    assert cluster.calls["create_job"] == 2
    assert list(cluster.jobs[NS]) == [launch.job_name]


def test_submit_into_an_unreachable_cluster_raises_unavailable(
    backend: KubernetesBackend, cluster: FakeKubeGateway, launch: Launch
) -> None:
    cluster.outage = BackendUnavailable("The Kubernetes API server could not be reached")
    with pytest.raises(BackendUnavailable):
        backend.submit(launch)
    assert not cluster.jobs[NS]


def test_the_fake_refuses_what_the_api_server_would(cluster: FakeKubeGateway, launch: Launch) -> None:
    manifest = build_job_manifest(launch)
    with pytest.raises(BackendRejected):
        cluster.create_job("elsewhere", manifest)  # the path and the body disagree: 400
    manifest["spec"]["template"]["spec"]["containers"][0]["cmd"] = ["python"]
    with pytest.raises(BackendRejected):
        cluster.create_job(NS, manifest)  # not a Job the schema knows: 422
    assert not cluster.jobs[NS]


# --- poll: every state and reason -------------------------------------------------------------------
def test_a_job_that_is_not_on_the_cluster_is_missing(backend: KubernetesBackend, launch: Launch) -> None:
    assert seen(backend, launch).state == "missing"


def test_a_fresh_job_without_pods_waits_to_be_scheduled(backend: KubernetesBackend, launch: Launch) -> None:
    submitted(backend, launch)
    assert seen(backend, launch) == Observation("pending", "waiting to be scheduled")


def test_an_unschedulable_pod_says_what_the_scheduler_said(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    controller.unschedulable(NS, submitted(backend, launch), UNSCHEDULABLE)
    assert seen(backend, launch) == Observation("pending", f"unschedulable: {UNSCHEDULABLE}")


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_that_cannot_be_pulled_is_reported(
    backend: KubernetesBackend, controller: JobController, launch: Launch, reason: str
) -> None:
    message = 'Back-off pulling image "ghcr.io/example/train:1.0"'
    controller.image_pull_failure(NS, submitted(backend, launch), message, reason=reason)
    assert seen(backend, launch) == Observation("pending", f"image pull failure: {message}")


def test_a_scheduled_pod_whose_container_is_being_created_is_starting(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    controller.schedule(NS, submitted(backend, launch))
    assert seen(backend, launch) == Observation("pending", "starting (ContainerCreating)")


def test_a_pod_forbidden_by_the_quota_waits_for_quota(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    controller.forbid_by_quota(NS, submitted(backend, launch), QUOTA)
    assert seen(backend, launch) == Observation("pending", f"waiting for quota: {QUOTA}")
    assert cluster.calls["list_events"] == 1


def test_a_quota_complaint_in_a_job_condition_is_reported_without_reading_events(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.job(NS, name)["status"]["conditions"] = [
        {"type": "QuotaBlocked", "status": "True", "message": f"pods are forbidden: {QUOTA}"}
    ]
    assert seen(backend, launch) == Observation("pending", f"waiting for quota: {QUOTA}")
    assert cluster.calls["list_events"] == 0


def test_a_kueue_job_waits_for_admission_then_runs(
    backend: KubernetesBackend, controller: JobController, project: Project, lin: User
) -> None:
    project.kueue_queue = "team-demo"
    project.save()
    launch = make_launch(project, lin)
    name = submitted(backend, launch)
    assert seen(backend, launch) == Observation("pending", "not admitted by the queue team-demo yet")
    with pytest.raises(AssertionError):
        controller.create_pod(NS, name)  # suspended: no pods, whatever happens
    controller.admit(NS, name)
    controller.run(NS, name)
    assert seen(backend, launch).state == "running"


def test_a_running_pod_makes_the_launch_running_since_the_job_started(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    observation = seen(backend, launch)
    assert observation.state == "running"
    assert observation.started_at == when(controller.job(NS, name)["status"]["startTime"])
    assert observation.started_at is not None and observation.started_at.tzinfo is not None


def test_a_finished_pod_before_the_controller_decides_is_still_running(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    controller.pod(NS, name)["status"]["phase"] = "Succeeded"
    assert seen(backend, launch).state == "running"


def test_a_complete_job_succeeded(backend: KubernetesBackend, controller: JobController, launch: Launch) -> None:
    name = submitted(backend, launch)
    controller.succeed(NS, name)
    status = controller.job(NS, name)["status"]
    assert seen(backend, launch) == Observation(
        "succeeded", "", exit_code=0, started_at=when(status["startTime"]), finished_at=when(status["completionTime"])
    )


def test_a_non_zero_exit_fails_with_the_code_and_the_last_lines_of_output(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    output = "".join(f"step {i}\n" for i in range(1, 31)) + "Traceback: ValueError: bad lr\n"
    name = submitted(backend, launch)
    controller.fail(NS, name, exit_code=3, logs=output)
    observation = seen(backend, launch)
    assert observation.state == "failed" and observation.exit_code == 3
    lines = observation.reason.splitlines()
    assert lines[0] == "exit code 3"
    assert lines[1:] == output.splitlines()[-20:]
    assert observation.finished_at is not None
    assert cluster.calls["read_pod_log"] == 1


def test_a_failed_job_whose_pod_is_gone_still_quotes_the_termination_message(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.fail(NS, name, exit_code=2, logs="boom\n")
    pod = controller.pod(NS, name)
    cluster.logs.pop((NS, pod["metadata"]["name"]))  # the kubelet rotated the log away
    assert seen(backend, launch).reason == "exit code 2\nboom"


def test_an_out_of_memory_kill_is_named(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    controller.oom(NS, submitted(backend, launch))
    observation = seen(backend, launch)
    assert (observation.state, observation.reason, observation.exit_code) == (
        "failed",
        "out of memory (OOMKilled)",
        137,
    )
    assert cluster.calls["read_pod_log"] == 0


def test_a_job_past_its_deadline_fails_with_the_limit(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    controller.exceed_deadline(NS, name)
    observation = seen(backend, launch)
    assert (observation.state, observation.reason) == ("failed", "exceeded the maximum run time of 600 s")
    assert observation.finished_at is not None


def test_a_job_deleted_with_foreground_propagation_is_cancelled(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    controller.job(NS, name)["metadata"]["deletionTimestamp"] = "2025-01-01T01:00:00Z"
    assert seen(backend, launch).state == "cancelled"


def test_jobs_and_pods_not_managed_by_plinth_are_ignored(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    # Someone's own job that happens to carry our name, without our labels (unreal, but cheap to be safe).
    cluster.jobs[NS][name]["metadata"]["labels"]["plinth.dev/managed"] = "false"
    assert seen(backend, launch).state == "missing"


# --- poll: the cost ------------------------------------------------------------------------------------
def test_poll_lists_jobs_and_pods_once_per_namespace_whatever_the_number_of_launches(
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    project: Project,
    other_project: Project,
    lin: User,
    django_assert_max_num_queries: Any,
) -> None:
    launches = [make_launch(project, lin) for _ in range(12)] + [make_launch(other_project, lin) for _ in range(9)]
    steps: list[Callable[[str, str], Any]] = [controller.run, controller.succeed, controller.schedule]
    for index, launch in enumerate(launches):
        backend.submit(launch)
        steps[index % 3](launch.project.namespace, launch.job_name)
    cluster.calls.clear()
    cluster.calls_by_namespace.clear()
    fresh = list(Launch.objects.filter(pk__in=[launch.pk for launch in launches]))  # no select_related
    with django_assert_max_num_queries(1):  # the projects, in one query
        observations = backend.poll(fresh)

    assert {key: count for key, count in cluster.calls.items() if count} == {"list_jobs": 2, "list_pods": 2}
    assert cluster.calls_by_namespace == {
        ("list_jobs", NS): 1,
        ("list_pods", NS): 1,
        ("list_jobs", OTHER_NS): 1,
        ("list_pods", OTHER_NS): 1,
    }
    states = [observations[launch.pk].state for launch in launches]
    assert states == [["running", "succeeded", "pending"][index % 3] for index in range(len(launches))]


def test_poll_of_nothing_asks_nothing(backend: KubernetesBackend, cluster: FakeKubeGateway) -> None:
    assert backend.poll([]) == {}
    assert sum(cluster.calls.values()) == 0


def test_an_unreachable_cluster_makes_poll_raise_unavailable(
    backend: KubernetesBackend, cluster: FakeKubeGateway, launch: Launch
) -> None:
    submitted(backend, launch)
    cluster.outage = BackendUnavailable("down")
    with pytest.raises(BackendUnavailable):
        backend.poll([launch])


# --- logs, cancel, inventory ---------------------------------------------------------------------------
def test_logs_come_from_the_newest_pod_of_the_job(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    assert backend.logs(launch) == ""
    controller.run(NS, name, logs="old attempt\n")
    controller.pod(NS, name)["status"]["phase"] = "Failed"
    newer = controller.create_pod(NS, name)
    controller.run(NS, name, logs="".join(f"line {i}\n" for i in range(500)))
    assert controller.pod(NS, name) is newer
    assert backend.logs(launch, tail=3) == "line 497\nline 498\nline 499\n"


def test_logs_of_a_pod_that_has_not_started_are_empty(
    backend: KubernetesBackend, controller: JobController, launch: Launch
) -> None:
    controller.schedule(NS, submitted(backend, launch))
    assert backend.logs(launch) == ""


def test_cancel_deletes_the_job_in_the_background_and_is_idempotent(
    backend: KubernetesBackend, cluster: FakeKubeGateway, controller: JobController, launch: Launch
) -> None:
    name = submitted(backend, launch)
    controller.run(NS, name)
    backend.cancel(launch)
    assert cluster.deletions == [(NS, name, "Background")]
    assert not cluster.jobs[NS] and not cluster.pods[NS]
    assert seen(backend, launch).state == "missing"
    backend.cancel(launch)  # already gone: fine
    assert cluster.calls["delete_job"] == 2


def test_inventory_lists_one_device_per_allocatable_gpu(backend: KubernetesBackend, cluster: FakeKubeGateway) -> None:
    cluster.add_node("gpu-a", gpus=2, product=GPU_MODEL, memory_mib=81920)
    cluster.add_node("gpu-b", gpus=1, product="NVIDIA-H100-80GB-HBM3", memory_mib=81559, unschedulable=True)
    cluster.add_node("cpu-1")
    assert backend.inventory() == [
        GpuDevice("gpu-a", 0, model=GPU_MODEL, memory_total_mib=81920, extra={"schedulable": "true"}),
        GpuDevice("gpu-a", 1, model=GPU_MODEL, memory_total_mib=81920, extra={"schedulable": "true"}),
        GpuDevice("gpu-b", 0, model="NVIDIA-H100-80GB-HBM3", memory_total_mib=81559, extra={"schedulable": "false"}),
    ]


# --- label selectors (applied client-side too) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("plinth.dev/managed=true", True),
        ("plinth.dev/managed==true,job-name=plinth-1", True),
        ("plinth.dev/managed=false", False),
        ("job-name!=plinth-1", False),
        ("job-name!=plinth-2", True),
        ("job-name", True),
        ("!job-name", False),
        ("absent", False),
        ("!absent", True),
    ],
)
def test_selector_matches(selector: str, expected: bool) -> None:
    assert selector_matches({"plinth.dev/managed": "true", "job-name": "plinth-1"}, selector) is expected


# --- the rate limiter ---------------------------------------------------------------------------------------
class FakeClock:
    """Time that moves only when somebody sleeps."""

    def __init__(self) -> None:
        self.now_ns = 10**12

    def __call__(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.now_ns += max(1, round(seconds * 1e9))

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


def most_in_any_second(times_ns: list[int]) -> int:
    times = sorted(times_ns)
    best = start = 0
    for end, at in enumerate(times):
        while times[start] <= at - 1_000_000_000:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("qps", [20.0, 7.0, 2.5, 1.0])
def test_the_limiter_never_lets_more_than_qps_through_in_any_second(qps: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(qps, clock=clock, sleep=clock.sleep)
    granted: list[int] = []
    for index in range(200):
        if index % 37 == 0:
            clock.advance(3.0)  # idle spells refill the bucket: the worst case for bursts
        limiter.acquire()
        granted.append(clock())
    limit = int(-(-qps // 1))  # a non-integer rate rounds up: 2.5/s lets 3 through in some seconds
    assert most_in_any_second(granted) == limit
    assert limiter.stats.peak_per_second == limit
    assert limiter.stats.granted == 200


def test_a_burst_lets_that_many_through_at_once_then_the_rate_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock, sleep=clock.sleep)
    start = clock()
    for _ in range(5):
        assert limiter.acquire() == 0
    limiter.acquire()
    assert clock() - start == 100_000_000  # the sixth waits one interval
    for _ in range(94):
        limiter.acquire()
    assert (clock() - start) / 1e9 == pytest.approx(9.5)  # 100 requests: 5 at once, then 10/s


def test_a_limiter_without_a_rate_does_not_wait_but_still_counts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        limiter.acquire()
    assert clock.now_ns == 10**12
    assert limiter.stats.granted == 50 and limiter.stats.peak_per_second == 50


def test_the_limiter_holds_across_threads() -> None:
    """Five threads share one limiter. On a fake clock (shared, locked) the outcome does not
    depend on how the machine schedules the threads; the real-time behaviour under load is
    measured by `make bench` (tests/bench.py), not asserted here."""
    qps = 25.0
    clock = FakeClock()
    clock_lock = threading.Lock()
    slept: list[float] = []

    def now() -> int:
        with clock_lock:
            return clock()

    def sleep(seconds: float) -> None:
        with clock_lock:
            slept.append(seconds)
            clock.sleep(seconds)

    limiter = RateLimiter(qps, clock=now, sleep=sleep)
    start = threading.Barrier(5)
    granted = [0] * 5

    def worker(index: int) -> None:
        start.wait(timeout=30)
        for _ in range(8):
            limiter.acquire()
            granted[index] += 1

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(5)]
    began = now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert granted == [8] * 5 and limiter.stats.granted == 40
    assert slept, "the limiter made the threads wait"
    # The limiter's own record of grant times never holds more than `qps` in a second, and
    # 40 requests at 25/s span at least 39 intervals of the clock the limiter reads.
    assert 1 <= limiter.stats.peak_per_second <= qps
    assert now() - began >= 39 * math.ceil(1e9 / qps)
