"""The compare page's analysis choices (`pc`, `sx`, `sy`) are a validated query form: a key
of the compared runs is drawn, an empty one takes its default, and anything else is the
400 error page naming the parameter, never a silent fallback (a FakeMlflow)."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.tracking.forms import AnalysisQuery
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, make_run

URL = reverse("tracking:compare")


@pytest.fixture
def run_ids(project: Project, fake_mlflow: FakeMlflow) -> str:
    """Three runs with metrics accuracy and loss; params depth (all equal), lr and optimizer."""
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    ids = []
    for i in range(3):
        run = make_run(
            f"{i + 1:032x}",
            "1",
            name=f"run-{i}",
            metrics={"loss": [1.0, 0.5 / (i + 1)], "accuracy": [0.5, 0.5 + i / 10]},
            params={"depth": "4", "lr": str(i), "optimizer": ["adam", "sgd"][i % 2]},
        )
        ids.append(fake_mlflow.add(run).run_id)
    return ",".join(ids)


def chosen(response: object) -> tuple[str, str, str]:
    context = response.context  # type: ignore[attr-defined]
    return context["pc_metric"], context["sx"], context["sy"]


def test_keys_of_the_runs_are_drawn(vic: User, run_ids: str) -> None:
    response = client_for(vic).get(URL, {"run_ids": run_ids, "pc": "loss", "sx": "optimizer", "sy": "accuracy"})
    assert response.status_code == 200
    assert chosen(response) == ("loss", "optimizer", "accuracy")
    assert response.context["parcoords"] is not None and response.context["scatter"] is not None


def test_empty_or_absent_choices_take_their_defaults(vic: User, run_ids: str) -> None:
    # The first metric; the first param that differs between the runs (not depth); pc.
    for query in ({}, {"pc": "", "sx": "", "sy": ""}):
        response = client_for(vic).get(URL, {"run_ids": run_ids, **query})
        assert response.status_code == 200
        assert chosen(response) == ("accuracy", "lr", "accuracy")
    response = client_for(vic).get(URL, {"run_ids": run_ids, "pc": "loss"})
    assert chosen(response) == ("loss", "lr", "loss")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pc", "nope", "pc: &#x27;nope&#x27; is not a metric of these runs."),
        ("pc", "lr", "pc: &#x27;lr&#x27; is not a metric of these runs."),  # a param, not a metric
        ("sx", "loss", "sx: &#x27;loss&#x27; is not a param of these runs."),  # a metric, not a param
        ("sy", "LOSS", "sy: &#x27;LOSS&#x27; is not a metric of these runs."),  # keys are case-sensitive
    ],
)
def test_a_key_the_runs_lack_is_the_error_page_naming_the_parameter(
    vic: User, run_ids: str, name: str, value: str, message: str
) -> None:
    response = client_for(vic).get(URL, {"run_ids": run_ids, name: value})
    assert response.status_code == 400
    assert response.templates[0].name == "error.html"
    assert message in response.content.decode()


def test_every_bad_parameter_is_named_and_the_csv_is_refused_too(vic: User, run_ids: str) -> None:
    query = {"run_ids": run_ids, "pc": "x", "sx": "y", "sy": "loss"}
    page = client_for(vic).get(URL, query).content.decode()
    assert "pc: &#x27;x&#x27; is not a metric" in page and "sx: &#x27;y&#x27; is not a param" in page
    assert "sy:" not in page
    exported = client_for(vic).get(URL, {**query, "format": "csv"})
    assert exported.status_code == 400 and not exported["Content-Type"].startswith("text/csv")


def test_the_analysis_part_answers_a_bad_choice_with_a_message(vic: User, run_ids: str) -> None:
    response = client_for(vic).get(
        URL, {"run_ids": run_ids, "sx": "nope"}, headers={"HX-Request": "true", "HX-Target": "analysis"}
    )
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#messages"
    assert "sx: &#x27;nope&#x27; is not a param of these runs." in response.content.decode()


def test_the_form_offers_exactly_the_comparisons_keys() -> None:
    def form(query: str) -> AnalysisQuery:
        return AnalysisQuery(QueryDict(query), metrics=["acc", "loss"], params=["lr"])

    good = form("pc=loss&sx=lr&sy=acc")
    assert good.is_valid() and good.chosen(["lr"]) == ("loss", "lr", "acc")
    empty = form("")
    assert empty.is_valid() and empty.chosen([]) == ("acc", "", "acc")
    none = AnalysisQuery(QueryDict(""), metrics=[], params=[])
    assert none.is_valid() and none.chosen([]) == ("", "", "")
    bad = form("pc=lr&sx=acc&sy=")
    assert not bad.is_valid() and sorted(bad.errors) == ["pc", "sx"]
