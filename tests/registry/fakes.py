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
        return {
            "name": name,
            "creation_timestamp": model["created"],
            "last_updated_timestamp": model["created"],
            "tags": [{"key": k, "value": v} for k, v in model["tags"].items()],
            "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(model["aliases"].items())],
            "latest_versions": [self._version_json(name, latest)] if latest else [],
        }

    def _version_json(self, name: str, number: int) -> dict[str, Any]:
        version = self.models[name]["versions"][number]
        return {
            "name": name,
            "version": str(number),
            "run_id": version["run_id"],
            "status": version["status"],
            "source": f"runs:/{version['run_id']}/model",
            "creation_timestamp": self.models[name]["created"] + number,
            "tags": [{"key": k, "value": v} for k, v in version["tags"].items()],
        }

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
        self.models[name]["tags"][key] = value

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
        self.models[name]["versions"][int(version)]["tags"][key] = value

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        self._enter("set_alias")
        if int(version) not in self.models[name]["versions"]:
            raise MlflowError(f"Model Version (name={name}, version={version}) not found", http_status=404)
        self.models[name]["aliases"][alias] = int(version)

    def delete_alias(self, name: str, alias: str) -> None:
        self._enter("delete_alias")
        self.models[name]["aliases"].pop(alias, None)

    def get_alias(self, name: str, alias: str) -> int | None:
        self._enter("get_alias")
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
                "metrics": self.runs[r],
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
