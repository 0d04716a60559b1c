"""The GPU pages through the client: honest empty states, the fleet headline and heatmap,
the launch's GPU panel (htmx fragment and page), idle list, usage page, policy and prices."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.gpus.config import Sources
from apps.gpus.models import FindingStatus, Gpu, GpuPrice, IdleFinding, IdlePolicy
from apps.gpus.sampler import run_pass
from apps.gpus.sources.nvml import NvmlSource
from apps.gpus.store import floor_time, insert_samples
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.compute.fakes import make_launch
from tests.conftest import client_for
from tests.gpus.fakes import FakeNvml, StaticMetrics

pytestmark = pytest.mark.django_db


def text(response: Any) -> str:
    return " ".join(response.content.decode().split())


def test_without_any_source_the_fleet_page_says_what_to_configure(vic: User) -> None:
    page = text(client_for(vic).get("/gpus/"))
    assert "No GPU source is configured" in page and "PLINTH_PROMETHEUS_URL" in page
    assert 'id="headline"' not in page


def test_the_embedded_default_on_a_host_without_gpus(vic: User, settings: Any) -> None:
    settings.PLINTH_GPU_NVML = True
    run_pass(Sources(metrics=[NvmlSource(FakeNvml(driver=False))]))
    page = text(client_for(vic).get("/gpus/"))
    assert "This host has no GPUs" in page and "No GPU source is configured" not in page


def test_a_configured_source_that_never_ran_points_at_beat(vic: User, settings: Any) -> None:
    settings.PLINTH_PROMETHEUS_URL = "http://prometheus.example:9090"
    page = text(client_for(vic).get("/gpus/"))
    assert "The sampler has not run" in page and "sample_gpus" in page


@pytest.fixture
def fleet(project: Project, other_project: Project, ada: User, omar: User) -> dict[str, Any]:
    """4 GPUs sampled for 10 minutes: ada's launch idles on n1/0, omar's works on n1/1,
    n1/2 is free and busy (someone outside the scheduler), n1/3 free and idle."""
    now = timezone.now()
    began = now - timedelta(minutes=15)
    mine = make_launch(project, ada, status=Status.RUNNING, gpus=1, created_at=began, started_at=began)
    theirs = make_launch(other_project, omar, status=Status.RUNNING, gpus=1, created_at=began, started_at=began)
    metrics = StaticMetrics()
    for index, util, holder in ((0, 1.0, mine), (1, 80.0, theirs), (2, 50.0, None), (3, 0.0, None)):
        pod = f"plinth-{holder.pk}-abcde" if holder else ""
        metrics.set("n1", index, util, namespace=holder.project.namespace if holder else "", pod=pod)
    for minute in range(10, 0, -1):
        run_pass(Sources(metrics=[metrics]), now=now - timedelta(minutes=minute))
    return {"mine": mine, "theirs": theirs}


def test_the_fleet_headline_counts_allocated_but_idle_first(fleet: dict[str, Any], vic: User, omar: User) -> None:
    response = client_for(vic).get("/gpus/")
    page = text(response)
    figures = {key: page.split(f'data-figure="{key}">')[1].split("<")[0] for key in
               ("allocated-idle", "total", "allocated", "busy", "free")}  # fmt: skip
    assert figures == {"allocated-idle": "1", "total": "4", "allocated": "2", "busy": "2", "free": "2"}
    heatmap = json.loads(response.content.decode().split('id="heatmap-data" type="application/json">')[1].split("<")[0])
    assert heatmap["data"][0]["type"] == "heatmap"
    assert heatmap["data"][0]["y"] == ["n1/0", "n1/2", "n1/3"], "vic sees demo's GPU and the free ones"
    assert fleet["mine"].job_name in page and fleet["theirs"].job_name not in page
    outsider = text(client_for(omar).get("/gpus/"))
    assert fleet["theirs"].job_name in outsider and fleet["mine"].job_name not in outsider


def test_the_launch_panel_is_a_fragment_for_htmx_and_a_page_without(fleet: dict[str, Any], vic: User) -> None:
    launch: Launch = fleet["mine"]
    client = client_for(vic)
    swap = {"HX-Request": "true", "HX-Target": "gpu-usage"}  # the launch page's panel asks
    fragment = client.get(f"/gpus/launches/{launch.pk}/", headers=swap)
    body = fragment.content.decode()
    assert fragment.status_code == 200 and body.lstrip().startswith('<section class="card" id="gpu-usage"')
    assert "<html" not in body and 'hx-trigger="every 60s"' in body and "gpu-usage-chart-data" in body
    figure = json.loads(body.split('id="gpu-usage-chart-data" type="application/json">')[1].split("<")[0])
    assert figure["data"][0]["name"] == "n1/0 util" and set(figure["data"][0]["y"]) == {1.0}
    page = client.get(f"/gpus/launches/{launch.pk}/")
    assert "<html" in page.content.decode() and 'id="gpu-usage"' in page.content.decode()
    Launch.objects.filter(pk=launch.pk).update(status=Status.SUCCEEDED, finished_at=timezone.now())
    stopped = client.get(f"/gpus/launches/{launch.pk}/", headers=swap)
    assert stopped.status_code == 286, "htmx stops polling a launch that ended"
    assert 'id="gpu-usage"' in stopped.content.decode() and "hx-trigger" not in stopped.content.decode()


def test_a_launch_without_gpus_says_so(project: Project, vic: User, ada: User) -> None:
    launch = make_launch(project, ada, gpus=0, resources={"cpu": "1"})
    assert "This launch asked for no GPUs." in text(client_for(vic).get(f"/gpus/launches/{launch.pk}/"))


def test_the_idle_list_shows_owner_project_launch_and_how_long(
    fleet: dict[str, Any], vic: User, lin: User, ada: User
) -> None:
    gpu = Gpu.objects.get(node="n1", index=0)
    launch = fleet["mine"]
    IdleFinding.objects.create(
        gpu=gpu,
        launch=launch,
        project=launch.project,
        team=launch.project.team,
        status=FindingStatus.NOTIFIED,
        idle_since=timezone.now() - timedelta(minutes=95),
        checked_at=timezone.now(),
    )
    page = text(client_for(vic).get("/gpus/idle/"))
    assert launch.job_name in page and "ada" in page and "demo/demo" in page and "1 hour, 35 minutes" in page
    assert "Exempt</button>" not in page and "Exempt</button>" not in text(client_for(ada).get("/gpus/idle/"))
    assert "Exempt</button>" in text(client_for(lin).get("/gpus/idle/"))


def test_a_lead_exempts_from_the_launch_page_and_is_sent_back(fleet: dict[str, Any], lin: User) -> None:
    launch = fleet["mine"]
    response = client_for(lin).post(f"/gpus/launches/{launch.pk}/exempt/", {"reason": "profiling", "hours": "4"})
    assert response.status_code == 302 and response["Location"] == f"/launches/{launch.pk}/"
    exemption = launch.idle_exemption
    assert exemption.reason == "profiling" and exemption.expires_at is not None
    assert "Exempt from the idle policy by lin" in text(client_for(lin).get(f"/gpus/launches/{launch.pk}/"))


def test_the_usage_page_is_for_leads(fleet: dict[str, Any], lin: User, ada: User) -> None:
    assert client_for(ada).get("/gpus/usage/").status_code == 403
    response = client_for(lin).get("/gpus/usage/", {"group_by": "project"})
    page = text(response)
    assert response.status_code == 200 and "demo/demo" in page and "other/other" not in page
    assert "usage-chart-data" in page and "Export CSV" in page
    assert client_for(lin).get("/gpus/usage/", {"start": "2025-02-01", "end": "2025-01-01"}).status_code == 400


def test_a_lead_sets_the_projects_idle_policy(project: Project, lin: User, vic: User) -> None:
    url = f"/gpus/policy/{project.team.slug}/{project.slug}/"
    assert "under 5 % for 30 min" in text(client_for(vic).get(url))
    bad = client_for(lin).post(url, {"threshold_percent": "150", "window_minutes": "30", "grace_minutes": "60"})
    assert bad.status_code == 400 and not IdlePolicy.objects.exists()
    body = {"threshold_percent": "10", "window_minutes": "45", "notify": "on", "reclaim": "on", "grace_minutes": "15"}
    assert client_for(lin).post(url, body).status_code == 302
    policy = IdlePolicy.objects.get(project=project)
    assert (policy.threshold_percent, policy.window_minutes, policy.reclaim, policy.grace_minutes) == (10, 45, True, 15)
    event = AuditEvent.objects.get(verb="gpu.idle_policy.changed")
    assert event.actor_label == "lin" and (event.after or {})["reclaim"] is True and event.before is None


def test_a_platform_admin_sets_a_price(root: User) -> None:
    response = client_for(root).post("/gpus/prices/", {"product": "NVIDIA A100-SXM4-80GB", "price": "2.75"})
    assert response.status_code == 302
    assert str(GpuPrice.objects.get().price_per_hour) == "2.7500"
    client_for(root).post("/gpus/prices/", {"product": "NVIDIA A100-SXM4-80GB", "price": ""})
    assert not GpuPrice.objects.exists()
    assert [e.verb for e in AuditEvent.objects.order_by("id")] == ["gpu.price.set", "gpu.price.removed"]


def test_the_sampler_is_idempotent_within_a_minute(fleet: dict[str, Any]) -> None:
    metrics = StaticMetrics()
    metrics.set("n1", 0, 1.0)
    now = timezone.now()
    before = floor_time(now, 60)
    assert insert_samples(
        [(Gpu.objects.get(node="n1", index=0).pk, before, 5.0, 1, 1.0, None, False, None, None, None, "")]
    )
    first = run_pass(Sources(metrics=[metrics]), now=now)
    second = run_pass(Sources(metrics=[metrics]), now=now)
    assert first.at == second.at == before
    from apps.gpus.models import GpuSample

    assert GpuSample.objects.filter(at=before).count() == 1, "rows of the same minute are never written twice"
