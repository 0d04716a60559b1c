"""Rollout benchmark: seconds from "promotion approved" to "the new version serves 100 %"
with a 0-minute canary, on the local serving backend with real processes.

Run alone: `.venv/bin/python -m tests.bench_rollout` (a fresh SQLite database and a real
`mlflow server` in a temporary folder). Knob: PLINTH_BENCH_ROLLOUTS (3): how many
promotions, each of a new version (so each starts a model server from cold).

A lead approves a promotion through the API; then what the worker does runs in this
process: the apply task (MLflow's alias moves), and the deployment's reconcile task, sent by
the applied promotion, which sends itself again while the rollout is in flight (every
2 s while the new revision starts; the 0-minute canary at once). The clock stops at the
first pass that finds the new revision serving 100 %. Columns: the alias moved (apply),
pre-flight passed (the model server answered and predicted on the input example), 100 %."""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

from tests.bench import print_table, setup
from tests.mlflow_process import running_mlflow_server

ROLLOUTS = int(os.environ.get("PLINTH_BENCH_ROLLOUTS", "3"))
DEADLINE = 300.0  # seconds one rollout may take before the benchmark gives up


def progress(message: str) -> None:
    print(f"[bench_rollout] {message}", file=sys.stderr, flush=True)


def register_versions(url: str, name: str, count: int) -> str:
    """`count` versions of a digits classifier, each with its input example; returns the
    experiment id they were logged in."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, target = load_digits(return_X_y=True, as_frame=True)
    features, target = features[:400], target[:400]
    mlflow.set_tracking_uri(url)
    experiment = mlflow.set_experiment("bench/bench")
    for n in range(count):
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                LogisticRegression(max_iter=200 + n).fit(features, target),
                name="model",
                input_example=features.head(2),
                registered_model_name=name,
                pip_requirements=["scikit-learn"],
            )
    mlflow.MlflowClient().set_registered_model_tag(name, "plinth.project", "bench/bench")
    return str(experiment.experiment_id)


def run(url: str, data_dir: str) -> list[tuple[str, str]]:
    from django.conf import settings
    from rest_framework.test import APIClient

    from apps.access.roles import Role
    from apps.accounts.models import Membership, Team, User
    from apps.deployments import services
    from apps.deployments.models import Revision, RevisionStatus
    from apps.deployments.serving.local import stop_all_model_servers
    from apps.deployments.tasks import reconcile_deployment
    from apps.projects.models import ExperimentState, Project
    from apps.registry.models import RegisteredModel
    from apps.registry.tasks import apply_promotion

    settings.MLFLOW_TRACKING_URI = url
    settings.DATA_DIR = Path(data_dir)
    first = random.Random().randrange(20000, 60000, 100)  # clear of model servers of other runs
    settings.PLINTH_SERVING_PORTS = f"{first}-{first + 99}"
    name = "bench-digits"
    progress(f"registering {ROLLOUTS + 1} model versions")
    experiment_id = register_versions(url, name, ROLLOUTS + 1)
    team = Team.objects.create(slug="bench", name="Bench")
    project = Project.objects.create(
        team=team,
        slug="bench",
        name="Bench",
        namespace="plinth-bench-bench",
        mlflow_experiment_name="bench/bench",
        mlflow_experiment_id=experiment_id,
        mlflow_state=ExperimentState.LINKED,
        backend="local",
    )
    ada = User.objects.create_user("ada", password="x")
    lin = User.objects.create_user("lin", password="x")
    Membership.objects.create(team=team, user=ada, role=Role.MEMBER)
    Membership.objects.create(team=team, user=lin, role=Role.LEAD)
    RegisteredModel.objects.create(name=name, project=project)

    # The worker, in this process: a task sent with a countdown runs when it is due.
    due: list[tuple[float, int]] = []

    def later(args: tuple[int], countdown: float, **_: Any) -> None:
        due.append((time.monotonic() + countdown, args[0]))

    patches = ExitStack()
    patches.enter_context(mock.patch.object(reconcile_deployment, "apply_async", later))
    patches.enter_context(mock.patch.object(reconcile_deployment, "delay", lambda pk: later((pk,), 0)))
    patches.enter_context(mock.patch.object(apply_promotion, "delay", lambda pk: None))  # run below, timed

    def work_until(done: Any) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError("the rollout did not finish in time")
            due.sort()
            if due and due[0][0] <= time.monotonic():
                reconcile_deployment(due.pop(0)[1])
            else:
                time.sleep(0.05)

    def promote(version: int) -> int:
        api = APIClient()
        api.force_authenticate(ada)
        asked = api.post(
            "/api/v1/promotions/",
            {"model": name, "version": version, "alias": "champion", "justification": "bench"},
            format="json",
        )
        assert asked.status_code == 201, asked.content
        pk = int(asked.json()["id"])
        api.force_authenticate(lin)
        assert api.post(f"/api/v1/promotions/{pk}/approve/").json()["status"] == "approved"
        return pk

    rows: list[tuple[str, str]] = []
    try:
        apply_promotion(promote(1))
        deployment = services.create_deployment(ada, project, name="digits", model=name, canary_minutes=0)
        progress("first deploy")
        work_until(lambda: Revision.objects.filter(deployment=deployment, traffic=100, version=1).exists())
        totals: list[float] = []
        for version in range(2, ROLLOUTS + 2):
            progress(f"promoting version {version}")
            pk = promote(version)
            approved = time.monotonic()
            outcome = apply_promotion(pk)  # its commit sends the deployment's reconcile (into `due`)
            moved = time.monotonic()
            assert outcome == "applied", outcome
            revision = Revision.objects.filter(deployment=deployment, version=version)
            work_until(
                lambda r=revision: r.exclude(ready_at=None).exists() or r.filter(status=RevisionStatus.FAILED).exists()
            )
            ready = time.monotonic()
            work_until(lambda r=revision: r.filter(traffic=100).exists())
            served = time.monotonic()
            totals.append(served - approved)
            rows.append(
                (
                    f"version {version}: apply / pre-flight passed / 100 %",
                    f"{moved - approved:.1f} s / {ready - approved:.1f} s / {served - approved:.1f} s",
                )
            )
        rows.append(("approved → 100 %, median of the rollouts", f"{statistics.median(totals):.1f} s"))
        rows.append(("approved → 100 %, slowest", f"{max(totals):.1f} s"))
    finally:
        patches.close()
        stop_all_model_servers()
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plinth-bench-rollout-") as data_dir:
        setup(data_dir)
        with running_mlflow_server(Path(data_dir)) as url:
            rows = run(url, data_dir)
        print_table(
            f"Rollout: promotion approved → new version serves 100 % (0-minute canary, local backend, "
            f"{ROLLOUTS} promotions, each a cold model server)",
            rows,
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
