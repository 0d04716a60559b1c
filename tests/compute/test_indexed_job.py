"""A grid or random sweep on Kubernetes as ONE Indexed Job: the manifests (validated strictly),
200 trials in one create, per-index status from Job/Pod JSON in the API server's shape
(written by hand, see fixtures/indexed/README.md), cancelling one index or the whole sweep,
the GPU reservation, the sweep end to end on the stateful fake, extending it (and ending it
after), pruning one index, and the same requests over HTTP against kmock with the real
client. No real cluster is involved."""

from __future__ import annotations

import copy
import json
import shlex
import stat
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.compute.base import BackendRejected, Observation
from apps.compute.k8s import KubeApi, KubeGateway, KubernetesBackend, RateLimiter
from apps.compute.k8s.indexed import (
    CANCELLED_MARK,
    RUN_TRIAL,
    WorkloadView,
    build_indexed_job_manifest,
    build_trials_config_map,
    format_indexes,
    parse_indexes,
    script_key,
    trial_script,
)
from apps.launches import services, sweeps, tasks, workloads
from apps.launches.models import TERMINAL, Launch, Status, Sweep, SweepStatus, Template
from apps.launches.runenv import job_argv
from apps.projects.models import Backend, ExperimentState, Project
from apps.tracking.gateway import MlflowGateway
from portal.celery import app
from tests.compute.fakes import SCHEMA_VERSION, FakeKubeGateway, JobController
from tests.compute.kmock_server import Emulator
from tests.launches.conftest import FakeMlflow

pytestmark = pytest.mark.django_db

NS = "plinth-demo-demo"
FIXTURES = Path(__file__).parent / "fixtures" / "indexed"
HOSTILE = [
    "; rm -rf /",
    "$(whoami)",
    "`id`",
    "a b\tc",
    "' OR 1=1 --",
    '"quoted"',
    "--flag=x",
    "line\nbreak",
    "&& echo |",
]
PARAMETERS = {
    "lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
    "note": {"type": "str", "default": ""},
}


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    fake = FakeMlflow()
    for method in ("create_run", "set_tag", "end_run", "delete_run"):
        monkeypatch.setattr(
            MlflowGateway, method, lambda self, *args, _m=method, **kwargs: getattr(fake, _m)(*args, **kwargs)
        )
    return fake


@pytest.fixture
def eager() -> Iterator[None]:
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = before


@pytest.fixture
def kube_project(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(
        backend=Backend.KUBERNETES, gpu_quota=4, mlflow_state=ExperimentState.LINKED, mlflow_experiment_id="7"
    )
    project.refresh_from_db()
    return project


@pytest.fixture
def cluster() -> FakeKubeGateway:
    return FakeKubeGateway()


@pytest.fixture
def controller(cluster: FakeKubeGateway) -> JobController:
    return JobController(cluster)


@pytest.fixture
def backend(cluster: FakeKubeGateway, monkeypatch: pytest.MonkeyPatch) -> KubernetesBackend:
    backend = KubernetesBackend(cluster)
    for module in (tasks, workloads):
        monkeypatch.setattr(module, "get_backend", lambda name: backend)
    return backend


@pytest.fixture
def train(kube_project: Project) -> Template:
    return Template.objects.create(
        team=kube_project.team,
        slug="train",
        name="Train",
        image="ghcr.io/example/train:1.0",
        command=["python", "train.py", "--lr={lr}"],
        parameters=PARAMETERS,
        max_resources={"cpu": "2", "memory": "4Gi", "gpus": 1},
        backends=["kubernetes"],
        max_runtime_seconds=900,
    )


def start(
    user: User,
    project: Project,
    template: Template,
    capture: Any,
    *,
    space: dict[str, Any],
    parallelism: int,
    gpus: int = 1,
    strategy: str = "grid",
    max_trials: int = 1000,
) -> Sweep:
    """Create a sweep and run what its creation queues (advance → the trials → one submit)."""
    with capture(execute=True):
        sweep = sweeps.create_sweep(
            user,
            project,
            template,
            strategy=strategy,
            space=space,
            max_trials=max_trials,
            parallelism=parallelism,
            resources={"cpu": "1", "memory": "1Gi", "gpus": gpus},
            seed=5,
        )
    sweep.refresh_from_db()
    return sweep


def trials_of(sweep: Sweep) -> list[Launch]:
    return list(Launch.objects.filter(sweep=sweep).select_related("project__team", "template").order_by("trial"))


def reconcile() -> None:
    tasks._sync_launches_pass()


# --- the manifests -------------------------------------------------------------------------------
def test_the_indexed_job_and_its_config_map_are_valid_and_say_what_the_sweep_asked(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    settings.PLINTH_KUBE_JOB_TTL = 3600
    Project.objects.filter(pk=kube_project.pk).update(kueue_queue="team-demo")
    kube_project.refresh_from_db()
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.01, 0.001]}, parallelism=2
    )
    trials = trials_of(sweep)
    job = build_indexed_job_manifest(sweep, trials)
    config_map = build_trials_config_map(sweep, trials)
    assert kubernetes_validate.validate(job, SCHEMA_VERSION, strict=True)
    assert kubernetes_validate.validate(config_map, SCHEMA_VERSION, strict=True)

    labels = {
        "plinth.dev/sweep": str(sweep.pk),
        "plinth.dev/project": "demo",
        "plinth.dev/team": "demo",
        "plinth.dev/managed": "true",
    }
    assert job["metadata"] == {
        "name": f"plinth-sweep-{sweep.pk}",
        "namespace": NS,
        "labels": {**labels, "kueue.x-k8s.io/queue-name": "team-demo"},
    }
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 2)
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"], spec["podReplacementPolicy"]) == (0, 3, "Failed")
    assert spec["podFailurePolicy"] == {
        "rules": [{"action": "FailIndex", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    assert spec["suspend"] is True and spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in spec  # a Job-wide deadline would stop the whole sweep
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert pod["activeDeadlineSeconds"] == 900 and pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    [main] = pod["containers"]
    assert main["command"] == ["/bin/sh", "-c", RUN_TRIAL]
    assert main["resources"]["limits"] == {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}
    env = {item["name"]: item["value"] for item in main["env"]}
    assert env["MLFLOW_EXPERIMENT_ID"] == "7" and env["PLINTH_SWEEP_ID"] == str(sweep.pk)
    assert "MLFLOW_RUN_ID" not in env  # per index, in its script
    assert pod["volumes"] == [
        {"name": "plinth-trials", "configMap": {"name": f"plinth-sweep-{sweep.pk}", "defaultMode": 0o444}}
    ]

    assert config_map["metadata"]["labels"] == labels
    assert sorted(config_map["data"]) == [script_key(i) for i in range(3)]
    for trial in trials:
        assert f"MLFLOW_RUN_ID={trial.mlflow_run_id}" in config_map["data"][script_key(trial.trial or 0)]


def test_each_index_runs_its_own_argv_and_run_id_whatever_the_parameters_hold(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    tmp_path: Path,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada,
        kube_project,
        train,
        django_capture_on_commit_callbacks,
        space={"note": HOSTILE, "lr": [0.5]},
        parallelism=1,
        gpus=0,
    )
    trials = trials_of(sweep)
    assert len(trials) == len(HOSTILE)
    # A stand-in `python` on PATH prints what it was given, one NUL-terminated item each.
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\nprintf "%s\\0" "$MLFLOW_RUN_ID" "$PLINTH_PARAM_NOTE" "$@"\n')
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    for trial in trials:
        script = tmp_path / f"trial-{trial.trial}.sh"
        script.write_text(trial_script(trial))
        done = subprocess.run(
            ["/bin/sh", str(script)],
            env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
            capture_output=True,
            check=True,
            timeout=30,
        )
        printed = done.stdout.decode().split("\0")[:-1]
        assert printed[0] == trial.mlflow_run_id
        assert printed[1] == trial.parameters["note"] == HOSTILE[trial.trial or 0]
        assert printed[2:] == job_argv(trial)[1:]  # ['train.py', '--lr=0.5', '--note=<hostile>']


def test_a_pod_without_its_index_runs_no_trial() -> None:
    done = subprocess.run(
        ["/bin/sh", "-c", RUN_TRIAL], env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30, check=False
    )
    assert done.returncode != 0 and b"JOB_COMPLETION_INDEX" in done.stderr


def test_interval_strings_round_trip() -> None:
    assert parse_indexes("1,3-5") == {1, 3, 4, 5}
    assert parse_indexes("") == set() and parse_indexes(None) == set()
    assert parse_indexes("0-2,x,7") == {0, 1, 2, 7}  # an unreadable part is skipped, not fatal
    for indexes in (set(), {0}, {1, 3, 4, 5}, {0, 1, 2, 7, 9, 10, 999}):
        assert parse_indexes(format_indexes(indexes)) == indexes
    assert format_indexes({5, 4, 3, 1}) == "1,3-5"


# --- one Job, not one per trial ------------------------------------------------------------------
def test_200_trials_are_submitted_as_one_job(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    values = [round(0.0001 * (i + 1), 6) for i in range(200)]
    sweep = start(ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": values}, parallelism=4)

    assert cluster.calls["create_job"] == 1 and cluster.calls["create_config_map"] == 1
    [job] = cluster.jobs[NS].values()
    assert job["metadata"]["name"] == sweep.workload == f"plinth-sweep-{sweep.pk}"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (200, 4)
    trials = trials_of(sweep)
    assert [t.trial for t in trials] == list(range(200))
    assert {t.status for t in trials} == {Status.PENDING}
    assert [t.parameters["lr"] for t in trials] == values
    # Every trial has its own MLflow child run, made before any compute, tagged with its index.
    runs = [fake_mlflow.runs[t.mlflow_run_id] for t in trials]
    assert len({t.mlflow_run_id for t in trials}) == 200
    assert all(run["tags"]["mlflow.parentRunId"] == sweep.mlflow_parent_run_id for run in runs)
    assert [run["tags"]["plinth.trial"] for run in runs] == [str(i) for i in range(200)]
    scripts = cluster.config_maps[NS][sweep.workload]["data"]
    assert all(f"MLFLOW_RUN_ID={t.mlflow_run_id} " in scripts[script_key(i)] for i, t in enumerate(trials))

    # Submitting again (a crashed worker, the reconciler) finds the Job: nothing is duplicated.
    assert workloads.submit(sweep.pk) == "nothing to submit"
    Launch.objects.filter(sweep=sweep).update(status=Status.SUBMITTING)
    assert workloads.submit(sweep.pk) == "submitted"
    assert len(cluster.jobs[NS]) == 1 and cluster.calls["create_job"] == 2


def test_adaptive_strategies_and_other_backends_keep_one_job_per_trial(
    kube_project: Project, train: Template, ada: User, settings: Any
) -> None:
    def sweep(strategy: str) -> Sweep:
        return Sweep(project=kube_project, template=train, created_by=ada, strategy=strategy, space={}, max_trials=1)

    assert workloads.eligible(sweep("grid")) and workloads.eligible(sweep("random"))
    assert not workloads.eligible(sweep("bayes")) and not workloads.eligible(sweep("cmaes"))
    settings.PLINTH_KUBE_INDEXED_SWEEPS = False
    assert not workloads.eligible(sweep("grid"))
    settings.PLINTH_KUBE_INDEXED_SWEEPS = True
    kube_project.backend = Backend.LOCAL
    assert not workloads.eligible(sweep("grid"))


def test_an_unreachable_cluster_keeps_the_trials_for_the_reconciler(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    from apps.compute.base import BackendUnavailable

    cluster.outage = BackendUnavailable("connection refused")
    sweep = start(ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2]}, parallelism=2)
    trials = trials_of(sweep)
    assert {t.status for t in trials} == {Status.SUBMITTING}
    assert all(t.next_submit_at is not None and "Retrying" in t.status_reason for t in trials)
    cluster.outage = None
    Launch.objects.filter(sweep=sweep).update(next_submit_at=trials[0].created_at - timedelta(seconds=1))
    reconcile()
    assert {t.status for t in trials_of(sweep)} == {Status.PENDING}
    # The first try failed at its first request; the reconciler's made the ConfigMap and the one Job.
    assert (cluster.calls["create_config_map"], cluster.calls["create_job"], len(cluster.jobs[NS])) == (2, 1, 1)


# --- status per index, from Job and Pod JSON in the API server's shape ----------------------------------
def cluster_objects(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Job and pods of fixtures/indexed/<name>.json (hand-written: see its README)."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return data["job"], data["pods"]


@pytest.mark.parametrize("name", sorted(path.stem for path in FIXTURES.glob("*.json")))
def test_the_fixture_objects_follow_the_kubernetes_schema(name: str) -> None:
    job, pods = cluster_objects(name)
    # Strictly (no unknown field) against the oldest version indexed.py supports and the newest known.
    for version in ("1.31.0", SCHEMA_VERSION):
        for obj in (job, *pods):
            assert kubernetes_validate.validate(obj, version, strict=True)
    spec, status = job["spec"], job["status"]
    assert (job["kind"], spec["completionMode"], spec["backoffLimitPerIndex"]) == ("Job", "Indexed", 0)
    completed, failed = parse_indexes(status.get("completedIndexes")), parse_indexes(status.get("failedIndexes"))
    assert not completed & failed and completed | failed <= set(range(spec["completions"]))
    assert (status.get("succeeded", 0), status.get("failed", 0)) == (len(completed), len(failed))
    for pod in pods:
        meta = pod["metadata"]
        index = meta["labels"]["batch.kubernetes.io/job-completion-index"]
        assert meta["annotations"]["batch.kubernetes.io/job-completion-index"] == index
        assert meta["name"].startswith(f"{job['metadata']['name']}-{index}-")
        assert meta["labels"]["job-name"] == job["metadata"]["name"]


IN_FLIGHT = {
    0: ("succeeded", ""),
    1: ("failed", "exit code 2\nTraceback (most recent call last):"),
    2: ("succeeded", ""),
    3: ("succeeded", ""),
    4: ("running", ""),
    5: ("failed", "exceeded the maximum run time of 600 s"),
    6: ("pending", "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    7: ("pending", 'image pull failure: Back-off pulling image "ghcr.io/example/train:1.0"'),
}


@pytest.mark.parametrize(("index", "expected"), sorted(IN_FLIGHT.items()))
def test_each_index_of_a_job_in_flight_maps_to_its_own_state(index: int, expected: tuple[str, str]) -> None:
    job, pods = cluster_objects("job_in_flight")
    seen = WorkloadView.read(job, pods).observe(index)
    state, reason = expected
    assert seen.state == state
    assert seen.reason.startswith(reason)
    if state == "succeeded":
        assert seen.exit_code == 0 and seen.finished_at is not None and seen.started_at is not None
    if index == 1:
        assert seen.exit_code == 2 and "ValueError: lr must be positive" in seen.reason


def test_the_failed_index_quotes_the_log_it_reads() -> None:
    job, pods = cluster_objects("job_in_flight")
    asked: list[str] = []

    def read_log(pod: str) -> str:
        asked.append(pod)
        return "epoch 1\nepoch 2\nCUDA error: device-side assert triggered\n"

    seen = WorkloadView.read(job, pods).observe(1, read_log=read_log)
    assert asked == ["plinth-sweep-41-1-q9w4z"]
    assert seen.reason == "exit code 2\nepoch 1\nepoch 2\nCUDA error: device-side assert triggered"


def test_a_finished_job_with_failed_indexes_maps_each_trial() -> None:
    job, pods = cluster_objects("job_failed_indexes")
    view = WorkloadView.read(job, pods)
    states = {index: view.observe(index) for index in range(6)}
    assert {i for i, seen in states.items() if seen.state == "succeeded"} == {0, 1, 2, 4}
    assert states[3] == Observation(
        "failed",
        "out of memory (OOMKilled)",
        exit_code=137,
        started_at=states[3].started_at,
        finished_at=states[3].finished_at,
    )
    assert states[5].state == "failed"
    assert states[5].reason == "stopped by the cluster: Preempted in order to admit critical pod"
    # Indexes 1 and 2 have no pod any more (deleted after they completed): still succeeded.
    assert states[1].exit_code == 0 and states[1].started_at is None


def test_a_suspended_workload_waits_for_its_queue_and_a_deleted_one_is_missing() -> None:
    job, pods = cluster_objects("job_suspended_by_kueue")
    view = WorkloadView.read(job, pods)
    assert [view.observe(i) for i in range(4)] == [
        Observation("pending", "not admitted by the queue team-demo yet")
    ] * 4
    assert WorkloadView.read(None, []).observe(0).state == "missing"


# --- the sweep end to end on the stateful fake ---------------------------------------------------------
def test_a_sweep_runs_end_to_end_as_one_indexed_job(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada,
        kube_project,
        train,
        django_capture_on_commit_callbacks,
        space={"lr": [0.1, 0.2, 0.3, 0.4, 0.5]},
        parallelism=2,
    )
    name = sweep.workload
    # The sweep reserves parallelism x GPUs per trial, not one GPU per planned trial.
    assert services.gpus_in_use(kube_project) == 2
    assert controller.start_indexes(NS, name) == [0, 1]
    controller.run_index(NS, name, 0, logs="epoch 1 loss 0.9\n")
    reconcile()
    states = {t.trial: t.status for t in trials_of(sweep)}
    assert states == {0: Status.RUNNING, 1: Status.PENDING, 2: Status.PENDING, 3: Status.PENDING, 4: Status.PENDING}
    [waiting] = [t for t in trials_of(sweep) if t.trial == 2]
    assert waiting.status_reason.startswith("waiting for a free slot of the sweep")

    # Logs per trial: that index's pod.
    [first] = [t for t in trials_of(sweep) if t.trial == 0]
    assert backend.logs(first) == "epoch 1 loss 0.9\n"
    assert backend.logs(waiting) == ""

    controller.succeed_index(NS, name, 0)
    controller.fail_index(NS, name, 1, exit_code=1, logs="Traceback\nRuntimeError: NaN loss\n")
    assert controller.start_indexes(NS, name) == [2, 3]
    for index in (2, 3):
        controller.succeed_index(NS, name, index)
    assert controller.start_indexes(NS, name) == [4]
    controller.run_index(NS, name, 4)
    reconcile()
    by_index = {t.trial: t for t in trials_of(sweep)}
    assert by_index[0].status == by_index[2].status == by_index[3].status == Status.SUCCEEDED
    assert by_index[1].status == Status.FAILED and by_index[1].exit_code == 1
    assert "RuntimeError: NaN loss" in by_index[1].status_reason
    assert by_index[4].status == Status.RUNNING
    assert services.gpus_in_use(kube_project) == 1  # one live trial: min(parallelism, 1) x 1
    assert fake_mlflow.runs[by_index[0].mlflow_run_id]["status"] == "FINISHED"
    assert fake_mlflow.runs[by_index[1].mlflow_run_id]["status"] == "FAILED"

    controller.succeed_index(NS, name, 4)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED
    assert name in cluster.jobs[NS]  # the Job stays (its pods' logs are the trials' logs) until its TTL
    assert name not in cluster.config_maps[NS]  # its scripts are released
    assert services.gpus_in_use(kube_project) == 0
    assert cluster.calls["create_job"] == 1


def test_cancelling_one_trial_deletes_only_its_pod(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3, 0.4]}, parallelism=2
    )
    name = sweep.workload
    controller.start_indexes(NS, name)
    controller.run_index(NS, name, 0)
    controller.run_index(NS, name, 1)
    reconcile()
    by_index = {t.trial: t for t in trials_of(sweep)}

    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_launch(ada, by_index[1])
    assert cluster.calls["delete_pod"] == 1 and cluster.calls["delete_job"] == 0
    assert controller.index_pods(NS, name, 1) == []
    assert parse_indexes(cluster.jobs[NS][name]["status"]["failedIndexes"]) == {1}
    by_index = {t.trial: t for t in trials_of(sweep)}
    assert by_index[1].status == Status.CANCELLED
    assert by_index[1].status_reason == "the trial's pod was deleted before it ended"
    assert fake_mlflow.runs[by_index[1].mlflow_run_id]["status"] == "KILLED"
    assert by_index[0].status == Status.RUNNING  # the other trials go on
    assert controller.index_pods(NS, name, 0)[0]["status"]["phase"] == "Running"

    # A trial whose pod does not exist yet: its script is replaced, so when the Job
    # controller gets to it, it fails at once and the trial ends cancelled.
    with django_capture_on_commit_callbacks(execute=True):
        services.cancel_launch(ada, by_index[3])
    assert CANCELLED_MARK in cluster.config_maps[NS][name]["data"][script_key(3)]
    assert Launch.objects.get(pk=by_index[3].pk).status == Status.CANCELLING
    controller.succeed_index(NS, name, 0)
    assert controller.start_indexes(NS, name) == [2, 3]
    controller.run_index(NS, name, 3)
    reconcile()
    cancelled = Launch.objects.get(pk=by_index[3].pk)
    assert cancelled.status == Status.CANCELLED and cancelled.status_reason == "cancelled before it started"
    assert Launch.objects.get(pk=by_index[2].pk).status == Status.PENDING


def test_cancelling_the_sweep_deletes_its_job_once(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada,
        kube_project,
        train,
        django_capture_on_commit_callbacks,
        space={"lr": [round(0.01 * i, 2) for i in range(1, 31)]},
        parallelism=2,
    )
    name = sweep.workload
    controller.start_indexes(NS, name)
    controller.run_index(NS, name, 0)
    controller.succeed_index(NS, name, 1)
    reconcile()

    with django_capture_on_commit_callbacks(execute=True):
        sweeps.cancel_sweep(ada, sweep)
    assert cluster.calls["delete_job"] == 1 and cluster.calls["delete_pod"] == 0
    assert cluster.deletions == [(NS, name, "Background")]
    assert name not in cluster.jobs[NS] and name not in cluster.config_maps[NS]
    assert cluster.pods[NS] == {}
    statuses = [t.status for t in trials_of(sweep)]
    assert statuses[1] == Status.SUCCEEDED
    assert statuses[0] == Status.CANCELLED and set(statuses[2:]) == {Status.CANCELLED}
    assert all(status in TERMINAL for status in statuses)
    assert services.gpus_in_use(kube_project) == 0


def test_the_reservation_counts_against_the_project_quota(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    Project.objects.filter(pk=kube_project.pk).update(gpu_quota=3)
    kube_project.refresh_from_db()
    start(ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=2)
    assert services.gpus_in_use(kube_project) == 2
    # A second sweep needing two more GPUs at once waits: nothing is created for it yet.
    second = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.5, 0.6]}, parallelism=2
    )
    assert not Launch.objects.filter(sweep=second).exists() and second.workload == ""
    assert len(fake_mlflow.runs) == 3 + 2  # the parents and the first sweep's trials: no orphan
    # The reservation leaves one GPU of three: one single launch fits, a second does not.
    services.create_launch(ada, kube_project, train, resources={"gpus": 1})
    assert services.gpus_in_use(kube_project) == 3
    with pytest.raises(services.QuotaExceeded):
        services.create_launch(ada, kube_project, train, resources={"gpus": 1})


# --- extending an Indexed-Job sweep, ending it afterwards, pruning one index ----------------------------
LR_CHOICES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
OLD_LOG = "epoch 3 loss 0.12\n"


def finished_then_extended(
    user: User, project: Project, template: Template, controller: JobController, capture: Any
) -> tuple[Sweep, list[Launch], list[Launch], dict[str, Any]]:
    """A random sweep of two trials that ran as one Indexed Job and ended (index 0 succeeded,
    index 1 failed), then extended by two trials. Returns the sweep, its two Job-run trials,
    the extension's two trials, and the old Job and its pods as the cluster held them just
    before the extension ({"job": …, "pods": […]})."""
    sweep = start(
        user, project, template, capture, space={"lr": LR_CHOICES}, parallelism=2, strategy="random", max_trials=2
    )
    name = sweep.workload
    assert controller.start_indexes(NS, name) == [0, 1]
    controller.succeed_index(NS, name, 0, logs=OLD_LOG)
    controller.fail_index(NS, name, 1, exit_code=2, logs="Traceback\nValueError: diverged\n")
    with capture(execute=True):
        reconcile()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED
    before = {"job": copy.deepcopy(controller.job(NS, name)), "pods": copy.deepcopy(controller.pods(NS, name))}
    with capture(execute=True):
        sweeps.extend_sweep(user, sweep, 2)
    sweep.refresh_from_db()
    trials = trials_of(sweep)
    return sweep, trials[:2], trials[2:], before


def test_an_extended_indexed_sweep_runs_its_new_trials_as_their_own_jobs_and_leaves_the_old_job_alone(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep, old, new, before = finished_then_extended(
        ada, kube_project, train, controller, django_capture_on_commit_callbacks
    )
    name = sweep.workload
    assert sweep.status == SweepStatus.RUNNING and name == f"plinth-sweep-{sweep.pk}"
    assert [t.trial for t in old] == [0, 1] and [t.trial for t in new] == [2, 3]
    assert {t.parameters["lr"] for t in trials_of(sweep)} <= set(LR_CHOICES)
    assert len({t.parameters["lr"] for t in trials_of(sweep)}) == 4  # the extension repeats no trial
    # The new trials are ordinary launches: one Job each, not indexes of the old Job.
    assert all(workloads.WORKLOAD_KEY not in t.resources for t in new)
    assert {t.status for t in new} == {Status.PENDING}
    assert set(cluster.jobs[NS]) == {name, new[0].job_name, new[1].job_name}
    assert all("completionMode" not in cluster.jobs[NS][t.job_name]["spec"] for t in new)
    assert (cluster.calls["create_job"], cluster.calls["create_config_map"]) == (3, 1)
    # The old Job, its pods and their logs are untouched.
    assert controller.job(NS, name) == before["job"] and controller.pods(NS, name) == before["pods"]
    assert cluster.calls["delete_job"] == cluster.calls["delete_pod"] == cluster.calls["patch_config_map"] == 0
    assert backend.logs(old[0]) == OLD_LOG
    # Each old index is still read from the Job's status, as before the extension.
    seen = backend.poll(old)
    assert seen[old[0].pk].state == "succeeded" and seen[old[0].pk].exit_code == 0
    assert seen[old[1].pk].state == "failed" and seen[old[1].pk].reason.startswith("exit code 2\n")
    assert [t.status for t in old] == [Status.SUCCEEDED, Status.FAILED]
    # The ended Job reserves nothing: the GPUs in use are the new trials' own.
    assert workloads.reserved_gpus(kube_project) == 0 and services.gpus_in_use(kube_project) == 2

    controller.run(NS, new[0].job_name)
    controller.succeed(NS, new[1].job_name)
    reconcile()
    assert [t.status for t in trials_of(sweep)] == [Status.SUCCEEDED, Status.FAILED, Status.RUNNING, Status.SUCCEEDED]
    controller.succeed(NS, new[0].job_name)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED
    assert controller.job(NS, name) == before["job"] and cluster.calls["delete_job"] == 0
    assert services.gpus_in_use(kube_project) == 0


@pytest.mark.parametrize("ending", ["cancel", "fail"])
def test_ending_an_extended_sweep_stops_the_extension_and_keeps_the_ended_job(
    ending: str,
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep, old, new, before = finished_then_extended(
        ada, kube_project, train, controller, django_capture_on_commit_callbacks
    )
    name = sweep.workload
    controller.run(NS, new[0].job_name)  # one extension trial running, the other still pending
    reconcile()

    with django_capture_on_commit_callbacks(execute=True):
        if ending == "cancel":
            sweeps.cancel_sweep(ada, sweep)
        else:
            assert sweeps.fail_sweep(sweep.pk, "the objective loss was never logged") is True
    # Only the extension's Jobs are deleted, one request each; the ended Indexed Job stays
    # with its pods, so the first two trials' logs are still there until its TTL.
    assert sorted(cluster.deletions) == sorted((NS, t.job_name, "Background") for t in new)
    assert set(cluster.jobs[NS]) == {name}
    assert controller.job(NS, name) == before["job"] and controller.pods(NS, name) == before["pods"]
    assert cluster.calls["delete_pod"] == 0 and backend.logs(old[0]) == OLD_LOG

    sweep.refresh_from_db()
    assert sweep.status == (SweepStatus.CANCELLED if ending == "cancel" else SweepStatus.FAILED)
    trials = trials_of(sweep)
    assert [t.status for t in trials] == [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.CANCELLED]
    assert [t.status_reason for t in trials[:2]] == [old[0].status_reason, old[1].status_reason]
    if ending == "fail":
        assert all(t.status_reason == "the sweep failed: the objective loss was never logged" for t in trials[2:])
    assert [fake_mlflow.runs[t.mlflow_run_id]["status"] for t in trials] == ["FINISHED", "FAILED", "KILLED", "KILLED"]
    assert services.gpus_in_use(kube_project) == 0


def test_a_workload_with_no_live_index_is_neither_cancelled_nor_deleted(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    django_assert_num_queries: Any,
    eager: None,
) -> None:
    sweep, _old, _new, before = finished_then_extended(
        ada, kube_project, train, controller, django_capture_on_commit_callbacks
    )
    calls = dict(cluster.calls)
    # Nothing live in the Job: no audit event, no trial touched, no deletion queued.
    with django_assert_num_queries(2), django_capture_on_commit_callbacks() as queued:
        assert workloads.cancel_trials(ada, sweep) == 0
    assert queued == []
    # A deletion queued earlier (say, before the Job's last index ended) finds nothing live.
    with django_assert_num_queries(2):
        workloads.delete(sweep.pk)
    assert dict(cluster.calls) == calls
    assert controller.job(NS, sweep.workload) == before["job"]


PRUNE_REASON = "median of completed trials at step 12 was 0.41, this trial 0.78"


def test_pruning_one_index_deletes_only_its_pod_ends_it_pruned_and_frees_its_gpu(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=3
    )
    name = sweep.workload
    assert controller.start_indexes(NS, name) == [0, 1, 2]
    for index in range(3):
        controller.run_index(NS, name, index, logs=f"step 12 loss 0.{index}\n")
    reconcile()
    by_index = {t.trial: t for t in trials_of(sweep)}
    assert {t.status for t in by_index.values()} == {Status.RUNNING}
    Project.objects.filter(pk=kube_project.pk).update(gpu_quota=3)
    kube_project.refresh_from_db()
    assert services.gpus_in_use(kube_project) == 3  # 3 slots x 1 GPU: the quota is full
    with pytest.raises(services.QuotaExceeded):
        services.create_launch(ada, kube_project, train, resources={"gpus": 1})

    with django_capture_on_commit_callbacks(execute=True):
        assert services.prune_launch(by_index[1], PRUNE_REASON) is True
    # Its pod only: the Job controller fails index 1 for good, no other pod is touched.
    assert (cluster.calls["delete_pod"], cluster.calls["delete_job"]) == (1, 0)
    assert controller.index_pods(NS, name, 1) == []
    assert parse_indexes(controller.job(NS, name)["status"]["failedIndexes"]) == {1}
    assert CANCELLED_MARK in controller.script(NS, name, 1)  # a later pod for it would not run it
    pruned = Launch.objects.get(pk=by_index[1].pk)
    # cancelling + its index failed + a prune reason → pruned, with the pruner's words.
    assert (pruned.status, pruned.status_reason, pruned.prune_reason) == (Status.PRUNED, PRUNE_REASON, PRUNE_REASON)
    assert pruned.finished_at is not None
    run = fake_mlflow.runs[pruned.mlflow_run_id]
    assert run["status"] == "KILLED" and run["tags"][services.PRUNED_TAG] == PRUNE_REASON
    assert AuditEvent.objects.filter(verb=AuditVerb.TRIAL_PRUNED, target_id=str(pruned.pk)).count() == 1
    for index in (0, 2):
        assert Launch.objects.get(pk=by_index[index].pk).status == Status.RUNNING
        assert [p["status"]["phase"] for p in controller.index_pods(NS, name, index)] == ["Running"]
    # Its GPU is free at once: two trials live, min(parallelism 3, 2) x 1 GPU.
    assert services.gpus_in_use(kube_project) == 2
    services.create_launch(ada, kube_project, train, resources={"gpus": 1})  # fits now: 2 + 1 of 3
    assert services.prune_launch(pruned, PRUNE_REASON) is False  # it is no longer running

    controller.succeed_index(NS, name, 0)
    controller.succeed_index(NS, name, 2)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED
    assert [t.status for t in trials_of(sweep)] == [Status.SUCCEEDED, Status.PRUNED, Status.SUCCEEDED]
    assert name in cluster.jobs[NS] and cluster.calls["delete_job"] == 0  # the Job stays for the logs
    assert workloads.reserved_gpus(kube_project) == 0


def test_a_pruned_index_hands_its_slot_to_the_next_trial(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=2
    )
    name = sweep.workload
    assert controller.start_indexes(NS, name) == [0, 1]
    controller.run_index(NS, name, 0)
    controller.run_index(NS, name, 1)
    reconcile()
    by_index = {t.trial: t for t in trials_of(sweep)}
    assert services.gpus_in_use(kube_project) == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert services.prune_launch(by_index[0], PRUNE_REASON) is True
    assert Launch.objects.get(pk=by_index[0].pk).status == Status.PRUNED
    # Two trials are still live (1 running, 2 waiting for a slot): the reservation stays at
    # parallelism x GPUs, and the Job controller gives the freed slot to index 2.
    assert services.gpus_in_use(kube_project) == 2
    assert controller.start_indexes(NS, name) == [2]
    controller.run_index(NS, name, 2)
    reconcile()
    assert [t.status for t in trials_of(sweep)] == [Status.PRUNED, Status.RUNNING, Status.RUNNING]
    controller.succeed_index(NS, name, 1)
    reconcile()
    assert services.gpus_in_use(kube_project) == 1  # one live trial: min(2, 1) x 1 GPU
    controller.succeed_index(NS, name, 2)
    with django_capture_on_commit_callbacks(execute=True):
        reconcile()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED and services.gpus_in_use(kube_project) == 0
    assert cluster.calls["delete_pod"] == 1 and cluster.calls["delete_job"] == 0


# --- the same requests over HTTP: the real client against kmock -----------------------------------------
@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def http_gateway(emulator: Emulator) -> KubeGateway:
    return KubeGateway(emulator.api_client(), limiter=RateLimiter(1000), timeout=5)


@pytest.fixture(params=["fake", "kmock"])
def api(request: pytest.FixtureRequest) -> KubeApi:
    if request.param == "fake":
        return FakeKubeGateway()
    gateway: KubeApi = request.getfixturevalue("http_gateway")
    return gateway


def test_config_maps_and_pods_honour_the_same_contract_on_the_fake_and_over_http(api: KubeApi) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "plinth-sweep-9", "namespace": NS, "labels": {"plinth.dev/managed": "true"}},
        "data": {"trial-0.sh": "exec 'python' 'train.py'\n"},
    }
    assert api.create_config_map(NS, manifest) is True
    assert api.create_config_map(NS, manifest) is False  # 409 AlreadyExists
    assert api.patch_config_map(NS, "plinth-sweep-9", {"trial-0.sh": "exit 3\n"}) is True
    assert api.patch_config_map(NS, "no-such-map", {"a": "b"}) is False  # 404
    assert api.delete_config_map(NS, "plinth-sweep-9") is True
    assert api.delete_config_map(NS, "plinth-sweep-9") is False  # 404
    assert api.delete_pod(NS, "no-such-pod") is False  # 404


def test_a_sweep_over_http_is_one_job_and_each_index_is_observed(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    emulator: Emulator,
    http_gateway: KubeGateway,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    backend = KubernetesBackend(http_gateway)
    for module in (tasks, workloads):
        monkeypatch.setattr(module, "get_backend", lambda name: backend)
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=2
    )
    posts = [r.url.path for r in emulator.requests() if r.method == "POST"]
    assert posts == [f"/api/v1/namespaces/{NS}/configmaps", f"/apis/batch/v1/namespaces/{NS}/jobs"]
    trials = trials_of(sweep)
    manifest = build_indexed_job_manifest(sweep, trials)
    [job] = http_gateway.list_jobs(NS, f"plinth.dev/sweep={sweep.pk}")
    assert job["spec"] == manifest["spec"]  # nothing lost or reshaped by the client

    # The Job controller and kubelet, played over HTTP: index 0 done, 1 failed, 2 running.
    core, batch = client.CoreV1Api(emulator.api_client()), client.BatchV1Api(emulator.api_client())
    for index, phase in ((0, "Succeeded"), (1, "Failed"), (2, "Running")):
        pod_name = f"{sweep.workload}-{index}-abcde"
        labels = {
            **manifest["spec"]["template"]["metadata"]["labels"],
            "job-name": sweep.workload,
            "batch.kubernetes.io/job-name": sweep.workload,
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        body: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "ghcr.io/example/train:1.0"}]},
        }
        core.create_namespaced_pod(NS, body, _preload_content=False)
        state: dict[str, Any] = {"running": {"startedAt": "2026-03-02T10:00:05Z"}}
        if phase != "Running":
            code = 0 if phase == "Succeeded" else 4
            state = {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": "2026-03-02T10:05:00Z"}}
        status = {"phase": phase, "containerStatuses": [{"name": "main", "state": state}]}
        core.patch_namespaced_pod_status(pod_name, NS, {"status": status}, _preload_content=False)
    batch.patch_namespaced_job_status(
        sweep.workload,
        NS,
        {"status": {"completedIndexes": "0", "failedIndexes": "1", "active": 1}},
        _preload_content=False,
    )
    emulator.call(lambda k: k[f"get /api/v1/namespaces/{NS}/pods/{sweep.workload}-1-abcde/log"] << b"OSError: 4\n")
    observations = backend.poll(trials)
    assert [observations[t.pk].state for t in trials] == ["succeeded", "failed", "running"]
    assert observations[trials[1].pk].reason == "exit code 4\nOSError: 4"

    # Cancelling index 2 over HTTP: its script is replaced, its pod deleted, the Job stays.
    http_gateway.calls.clear()
    backend.cancel(trials[2])
    assert dict(http_gateway.calls) == {"patch_config_map": 1, "list_pods": 1, "delete_pod": 1}
    assert [p["metadata"]["name"] for p in http_gateway.list_pods(NS)] == [
        f"{sweep.workload}-0-abcde",
        f"{sweep.workload}-1-abcde",
    ]
    assert http_gateway.list_jobs(NS, f"plinth.dev/sweep={sweep.pk}") != []


def test_a_refused_workload_fails_every_trial_with_the_clusters_words(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    cluster.outage = BackendRejected(
        'configmaps is forbidden: User "system:serviceaccount:plinth:plinth" cannot create'
    )
    sweep = start(ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2]}, parallelism=2)
    trials = trials_of(sweep)
    assert {t.status for t in trials} == {Status.FAILED}
    assert all("rejected by the kubernetes backend: configmaps is forbidden" in t.status_reason for t in trials)
    assert {fake_mlflow.runs[t.mlflow_run_id]["status"] for t in trials} == {"FAILED"}


def test_a_disrupted_pod_fails_its_trial_only_and_a_trial_cancelled_before_submission_never_runs(
    ada: User,
    kube_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    backend: KubernetesBackend,
    cluster: FakeKubeGateway,
    controller: JobController,
    django_capture_on_commit_callbacks: Any,
    eager: None,
) -> None:
    sweep = start(
        ada, kube_project, train, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=3
    )
    name = sweep.workload
    controller.start_indexes(NS, name)
    for index in range(3):
        controller.run_index(NS, name, index)
    controller.evict_index(NS, name, 1, "Preempted in order to admit critical pod")
    reconcile()
    states = {t.trial: (t.status, t.status_reason) for t in trials_of(sweep)}
    assert states[1] == (Status.FAILED, "stopped by the cluster: Preempted in order to admit critical pod")
    assert states[0][0] == states[2][0] == Status.RUNNING

    # The scripts of trials that ended before the workload was (re)submitted exit at once.
    trials = trials_of(sweep)
    trials[2].status = Status.CANCELLED
    scripts = build_trials_config_map(sweep, trials)["data"]
    assert CANCELLED_MARK in scripts[script_key(2)] and "exec " not in scripts[script_key(2)]
    assert scripts[script_key(0)].splitlines()[-1] == "exec " + " ".join(shlex.quote(a) for a in job_argv(trials[0]))


def test_the_portals_cluster_role_grants_what_a_workload_needs() -> None:
    import yaml

    rbac = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
    [role] = [doc for doc in yaml.safe_load_all(rbac.read_text()) if doc and doc["kind"] == "ClusterRole"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert {"create", "patch", "delete"} <= granted[("", "configmaps")]
    assert {"list", "delete"} <= granted[("", "pods")]
    assert {"create", "delete", "list"} <= granted[("batch", "jobs")]
