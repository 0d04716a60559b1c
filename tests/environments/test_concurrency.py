"""Environment changes at the same moment, with real row locks: two retirements that cross
(A → B while B → C) never leave a project on a retired version, and no change deadlocks."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.core.errors import ServiceError
from apps.environments import services
from apps.environments.models import Environment, EnvironmentState
from apps.projects.models import Project
from tests.registry.test_concurrency import all_at_once, needs_row_locks


@needs_row_locks
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(3))
def test_crossing_retirements_never_strand_a_project_on_a_retired_version(
    root: User, project: Project, rounds: int
) -> None:
    a, b, c = (services.create_environment(root, name=f"cross-{rounds}") for _ in range(3))
    Project.objects.filter(pk=project.pk).update(environment=a)

    answers = all_at_once(
        lambda: services.change_environment(root, a, state="retired", replaced_by=b),
        lambda: services.change_environment(root, b, state="retired", replaced_by=c),
    )

    for answer in answers:  # a refusal (b is retired meanwhile) is a 4xx, never a database error
        assert isinstance(answer, Environment | ServiceError), repr(answer)
    project.refresh_from_db()
    assert project.environment_id is not None
    used = Environment.objects.get(pk=project.environment_id)
    assert used.state != EnvironmentState.RETIRED, [str(answer) for answer in answers]


@needs_row_locks
@pytest.mark.django_db(transaction=True)
def test_deprecating_towards_a_version_while_it_becomes_the_default_does_not_deadlock(root: User) -> None:
    old, new = services.create_environment(root, name="swap"), services.create_environment(root, name="swap")
    services.set_default(root, old)

    answers = all_at_once(
        lambda: services.change_environment(root, old, state="deprecated", replaced_by=new),
        lambda: services.set_default(root, new),
    )

    assert all(isinstance(answer, Environment) for answer in answers), [repr(a) for a in answers]
    assert Environment.objects.get(pk=new.pk).is_default
