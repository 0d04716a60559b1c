"""One word per state: a sweep's state that a launch also has reads the same on both."""

from __future__ import annotations

from apps.launches.models import Status, SweepStatus


def test_a_sweep_state_and_the_launch_state_of_the_same_value_share_their_name_and_label() -> None:
    launch = {s.value: (s.name, s.label) for s in Status}
    shared = [s for s in SweepStatus if s.value in launch]
    assert {s.value for s in shared} == set(SweepStatus.values)  # a sweep has no state of its own
    for state in shared:
        assert (state.name, state.label) == launch[state.value], state
