"""A registered version's run is a link to Plinth's run page when the run is in the
model's project (and so visible to whoever sees the model); a run outside the project is
named as such and not linked."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from tests.conftest import client_for
from tests.registry.conftest import Registered

pytestmark = pytest.mark.django_db


@pytest.mark.mlflow
def test_a_versions_run_links_to_the_run_page_inside_the_project_only(
    vic: User, project: Project, other_project: Project, registered: Registered
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}])
    registered.version(name, {"accuracy": 0.5}, experiment="other/other")
    inside = registered.client.get_model_version(name, "1").run_id
    outside = registered.client.get_model_version(name, "2").run_id
    assert inside and outside

    page = client_for(vic).get(f"/models/registered/{name}/").content.decode()
    assert f'href="/runs/demo/demo/{inside}/"' in page
    assert f"/{outside}/" not in page and "a run outside this project" in page
    assert client_for(vic).get(f"/runs/demo/demo/{inside}/").status_code == 200


@pytest.mark.mlflow
def test_the_run_page_names_the_versions_registered_from_it_and_offers_their_promotion(
    ada: User, vic: User, project: Project, registered: Registered
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.95}])
    first = registered.client.get_model_version(name, "1").run_id
    url = f"/runs/demo/demo/{first}/"

    member = client_for(ada).get(url).content.decode()
    assert f'data-registered="{name}/1"' in member and f'data-registered="{name}/2"' not in member
    assert f'href="/models/registered/{name}/"' in member
    assert f"/models/registered/{name}/promote/?version=1" in member
    viewer = client_for(vic).get(url).content.decode()
    assert f'data-registered="{name}/1"' in viewer and "Request promotion" not in viewer
