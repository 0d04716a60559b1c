"""FakeRegistry: a small, stateful stand-in for MLflow's model registry at the level of
RegistryGateway's methods (a FAKE, not a mock). It keeps registered models with tags,
versions (each with a run and its metrics) and aliases, answers reads from that state,
and applies writes to it, with MLflow's behaviour where it matters: setting an alias to a
missing version is refused, deleting an unset alias is fine, an unset alias reads None.

Used where a real server is not the point (the authorization matrix, query budgets, policy
rules); tests of applying, rollback and drift run against the real `mlflow server`."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from apps.core.numbers import normalise
from apps.registry.mlflow import MlflowError, MlflowUnavailable, RegistryGateway
from apps.registry.models import PROJECT_TAG

PATCHED = (
    "project_models",
    "plinth_models",
    "get_registered_model",
    "set_registered_model_tag",
    "model_versions",
    "versions_of_runs",
    "get_model_version",
    "set_model_version_tag",
    "set_alias",
    "delete_alias",
    "get_alias",
    "run_summaries",
)


class FakeRegistry:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, float]] = {}
        self.calls: Counter[str] = Counter()
        self.down = False  # True: every call raises MlflowUnavailable, as a stopped server does
        self._ids = itertools.count(1)

    # -- building state from a test --------------------------------------------------------
    def add_model(self, name: str, project: str | None, versions: list[dict[str, float]] | None = None) -> None:
        """A registered model tagged with `project` ("team/slug"; None: untagged) and one
        version per metrics dict given (version 1 first)."""
        tags = {PROJECT_TAG: project} if project else {}
        self.models[name] = {"tags": tags, "aliases": {}, "versions": {}, "created": 1_700_000_000_000}
        for metrics in versions or []:
            self.add_version(name, metrics)

    def add_version(self, name: str, metrics: dict[str, float]) -> int:
        run_id = f"run{next(self._ids):04d}"
        self.runs[run_id] = dict(metrics)
        versions = self.models[name]["versions"]
        number = len(versions) + 1
        versions[number] = {"run_id": run_id, "status": "READY", "tags": {}}
        return number

    # -- the gateway's methods ---------------------------------------------------------------
    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.down:
            raise MlflowUnavailable("MLflow at fake:// is unreachable (ConnectionError).")

    def _model_json(self, name: str) -> dict[str, Any]:
        model = self.models[name]
        latest = max(model["versions"], default=None)
        found = {
            "name": name,
            "creation_timestamp": model["created"],
            "last_updated_timestamp": model["created"],
            "tags": [{"key": k, "value": v} for k, v in model["tags"].items()],
            "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(model["aliases"].items())],
            "latest_versions": [self._version_json(name, latest)] if latest else [],
        }
        return {k: v for k, v in found.items() if v != []}  # MLflow's JSON leaves out empty lists

    def _version_json(self, name: str, number: int) -> dict[str, Any]:
        version = self.models[name]["versions"][number]
        found = {
            "name": name,
            "version": str(number),
            "creation_timestamp": self.models[name]["created"] + number,
            "last_updated_timestamp": self.models[name]["created"] + number,
            "current_stage": "None",
            "description": "",
            "source": f"runs:/{version['run_id']}/model",
            "run_id": version["run_id"],
            "status": version["status"],
            "run_link": "",
            "tags": [{"key": k, "value": v} for k, v in version["tags"].items()],
            "aliases": sorted(a for a, v in self.models[name]["aliases"].items() if v == number),
        }
        return {k: v for k, v in found.items() if v != []}

    def _model(self, name: str) -> dict[str, Any]:
        """The model called `name`; MLflow's 404 when there is none."""
        if name not in self.models:
            raise MlflowError(
                f"Registered Model with name={name} not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404
            )
        model: dict[str, Any] = self.models[name]
        return model

    def _version(self, name: str, version: int | str) -> dict[str, Any]:
        """Version `version` of `name`; MLflow's 404 when either is missing."""
        if name not in self.models or int(version) not in self.models[name]["versions"]:
            raise MlflowError(
                f"Model Version (name={name}, version={version}) not found",
                error_code="RESOURCE_DOES_NOT_EXIST",
                http_status=404,
            )
        found: dict[str, Any] = self.models[name]["versions"][int(version)]
        return found

    def project_models(self, full_slug: str) -> list[dict[str, Any]]:
        self._enter("project_models")
        return [self._model_json(n) for n, m in sorted(self.models.items()) if m["tags"].get(PROJECT_TAG) == full_slug]

    def plinth_models(self) -> list[dict[str, Any]]:
        self._enter("plinth_models")
        return [self._model_json(n) for n, m in sorted(self.models.items()) if m["tags"].get(PROJECT_TAG)]

    def get_registered_model(self, name: str) -> dict[str, Any] | None:
        self._enter("get_registered_model")
        return self._model_json(name) if name in self.models else None

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._enter("set_registered_model_tag")
        self._model(name)["tags"][key] = value

    def model_versions(self, names: Any) -> list[dict[str, Any]]:
        self._enter("model_versions")
        return [
            self._version_json(name, number)
            for name in sorted(set(names))
            if name in self.models
            for number in sorted(self.models[name]["versions"], reverse=True)
        ]

    def versions_of_runs(self, run_ids: Any) -> list[dict[str, Any]]:
        self._enter("versions_of_runs")
        wanted = set(run_ids)
        return [
            self._version_json(name, number)
            for name, model in sorted(self.models.items())
            for number, version in sorted(model["versions"].items())
            if version["run_id"] in wanted
        ]

    def get_model_version(self, name: str, version: int | str) -> dict[str, Any] | None:
        self._enter("get_model_version")
        if name not in self.models or int(version) not in self.models[name]["versions"]:
            return None
        return self._version_json(name, int(version))

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        self._enter("set_model_version_tag")
        self._version(name, version)["tags"][key] = value

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        self._enter("set_alias")
        self._version(name, version)
        self.models[name]["aliases"][alias] = int(version)

    def delete_alias(self, name: str, alias: str) -> None:
        self._enter("delete_alias")
        self._model(name)["aliases"].pop(alias, None)

    def get_alias(self, name: str, alias: str) -> int | None:
        self._enter("get_alias")
        if name not in self.models:  # MLflow: 404, which the gateway reads as "not set"
            return None
        value: int | None = self.models[name]["aliases"].get(alias)
        return value

    def run_summaries(self, run_ids: Any) -> dict[str, dict[str, Any]]:
        self._enter("run_summaries")
        return {
            r: {
                "run_id": r,
                "run_name": f"name-{r}",
                "status": "FINISHED",
                "experiment_id": "1",
                # As the gateway reads them: NaN kept, ±inf and MLflow's sentinels as ±inf.
                "metrics": {k: normalise(v) for k, v in self.runs[r].items()},
            }
            for r in run_ids
            if r in self.runs
        }


def install(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    """Every RegistryGateway answers from one FakeRegistry for the rest of the test."""
    fake = FakeRegistry()
    for method in PATCHED:
        monkeypatch.setattr(
            RegistryGateway, method, lambda self, *args, _m=method, **kwargs: getattr(fake, _m)(*args, **kwargs)
        )
    return fake
