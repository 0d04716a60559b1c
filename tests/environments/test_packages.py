"""Requirement lists: normalising (one build per distinct list) and the check of a model's
requirements against an environment's installed packages."""

from __future__ import annotations

import hashlib

import pytest

from apps.core.errors import InvalidInput
from apps.environments.packages import Problem, check, normalise, requirement_lines


def test_lists_that_differ_in_order_case_spacing_and_comments_normalise_the_same() -> None:
    one = normalise("cowsay==6.1\nScikit_Learn>=1.7,<1.8\n")
    other = normalise("# ours\n  scikit-learn <1.8, >=1.7   # pinned\n\nCOWSAY == 6.1\ncowsay==6.1\n")

    assert one == other
    assert one[0] == "cowsay==6.1\nscikit-learn<1.8,>=1.7"
    assert one[1] == hashlib.sha256(one[0].encode()).hexdigest()


def test_different_lists_hash_differently() -> None:
    assert normalise("cowsay==6.1")[1] != normalise("cowsay==6.0")[1]


def test_an_empty_list_normalises_to_nothing() -> None:
    assert normalise("# nothing\n\n")[0] == ""


def test_markers_and_extras_are_kept() -> None:
    body, _ = normalise('Requests[SOCKS]>=2 ; python_version >= "3.8"')

    assert body == 'requests[socks]>=2; python_version >= "3.8"'


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("-r other.txt", "pip options are not allowed"),
        ("--index-url https://example.test/simple", "pip options are not allowed"),
        ("cowsay @ https://example.test/cowsay.whl", "not a URL"),
        ("cowsay=>6", "is not a requirement: Expected semicolon"),
        ("not a requirement!", "is not a requirement"),
    ],
)
def test_bad_lines_are_refused_on_the_requirements_field_naming_the_line(line: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalise(f"cowsay==6.1\n{line}\n")

    message = refused.value.fields["requirements"][0]
    assert line in message and says in message
    assert "\n" not in message
    assert refused.value.status_code == 400


def test_requirement_lines_drop_comments_blanks_and_options() -> None:
    text = "# MLflow's file\nmlflow==3.17.2  # logged\n\n-r base.txt\n  scikit-learn==1.7.0\n"

    assert requirement_lines(text) == ["mlflow==3.17.2", "scikit-learn==1.7.0"]


def test_check_names_missing_and_conflicting_packages_in_order() -> None:
    installed = {"Scikit_Learn": "1.6.1", "mlflow": "3.17.2", "numpy": "2.1.0"}

    problems = check(["scikit-learn==1.7.0", "mlflow>=3", "cowsay==6.1", "numpy"], installed)

    assert problems == [
        Problem("scikit-learn", "==1.7.0", "1.6.1", "conflict"),
        Problem("cowsay", "==6.1", "", "missing"),
    ]
    assert str(problems[0]) == "scikit-learn 1.6.1 is installed, the model needs ==1.7.0"
    assert str(problems[1]) == "cowsay (==6.1) is not installed"


def test_check_accepts_a_list_the_environment_meets() -> None:
    assert check(["cowsay==6.1", "Cowsay>=6", "mlflow"], {"cowsay": "6.1", "MLflow": "3.17.2"}) == []


def test_check_skips_requirements_whose_marker_is_false_here() -> None:
    lines = ['pywin32==306; sys_platform == "win32"', 'cowsay==6.1; python_version >= "3"']

    assert check(lines, {}) == [Problem("cowsay", "==6.1", "", "missing")]


def test_check_skips_unparsable_lines_and_counts_a_non_pep440_version_as_a_conflict() -> None:
    problems = check(["not a requirement!", "weird>=1", "anyversion"], {"weird": "banana", "anyversion": "banana"})

    assert problems == [Problem("weird", ">=1", "banana", "conflict")]


def test_check_allows_prereleases_that_the_specifier_contains() -> None:
    assert check(["torch>=2.5"], {"torch": "2.6.0rc1"}) == []


def test_the_first_distribution_of_a_name_wins_as_for_import() -> None:
    """A build that extends the portal sees its own scikit_learn first and the portal's
    scikit-learn after it: the build's is what imports, so it is what counts."""
    installed = {"scikit_learn": "1.7.1", "scikit-learn": "1.9.1"}
    assert check(["scikit-learn==1.7.1"], installed) == []
    assert check(["scikit-learn==1.9.1"], installed) == [Problem("scikit-learn", "==1.9.1", "1.7.1", "conflict")]
