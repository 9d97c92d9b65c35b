"""Packaging: the README's Quick start installs the runtime only, CI runs the
README's test set-up and test command, and the extras resolve without pip
backtracking through boto3 releases."""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from readme import command_with, steps

REPO = Path(__file__).resolve().parent.parent
CI_RUN = REPO / ".ci" / "run"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
QUICK_START = "Quick start"
# From a fresh clone: the command that makes the venv and starts, and the one
# that makes it and tests.
START = (QUICK_START, "python3 -m venv", "vidproxy serve")
TEST = (QUICK_START, "python3 -m venv", "-m pytest")
# What CI adds around the README's commands: variables for one command (quiet
# pip), and after the test command, keeping pytest's status.
CI_ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")
CI_STATUS_SUFFIX = re.compile(r"\s*\|\|\s*status=\$\?$")
PIP_INSTALL = re.compile(r"(\S*/)?pip3? install ")


def pip_install_target(command: str) -> str:
    """The ``.`` or ``.[extras]`` that the command's ``pip install -e`` step installs."""
    installs = [shlex.split(s) for s in steps(command) if PIP_INSTALL.match(s)]
    assert len(installs) == 1, command
    words = installs[0]
    return words[words.index("-e") + 1]


def extras_of(target: str) -> set[str]:
    """The extras ``.[a,b]`` names, with those that name this project's own."""
    match = re.fullmatch(r"\.(?:\[([\w,-]*)\])?", target)
    assert match is not None, target
    pending = [name for name in (match[1] or "").split(",") if name]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        found.add(name)
        for requirement in map(Requirement, EXTRAS[name]):
            if requirement.name == PROJECT["name"]:
                pending += sorted(requirement.extras - found)
    return found


def ci_lines() -> list[str]:
    lines = (line.strip() for line in CI_RUN.read_text().splitlines())
    return [CI_ENV_PREFIX.sub("", CI_STATUS_SUFFIX.sub("", line)) for line in lines]


def test_the_quick_start_installs_the_runtime_only_and_serves() -> None:
    command = command_with(*START)
    assert steps(command)[-1] == ".venv/bin/vidproxy serve"
    assert extras_of(pip_install_target(command)) == set()


def test_ci_runs_the_readmes_test_set_up_and_test_command_in_order() -> None:
    command = command_with(*TEST)
    lines = ci_lines()
    missing = [step for step in steps(command) if step not in lines]
    assert missing == [], f".ci/run lacks the README's {missing}"
    positions = [lines.index(step) for step in steps(command)]
    assert positions == sorted(positions)
    assert steps(command)[-1] == ".venv/bin/python -m pytest"


def test_the_test_set_up_installs_what_ci_runs() -> None:
    # CI runs the bench's smoke run and ruff from the README's test set-up.
    installed = extras_of(pip_install_target(command_with(*TEST)))
    assert {"test", "bench"} <= installed
    assert any(Requirement(r).name == "ruff" for name in installed for r in EXTRAS[name])


def test_every_boto3_the_extras_allow_has_a_botocore_aiobotocore_accepts() -> None:
    # boto3 and botocore are released with the same version numbers and boto3 X
    # accepts botocore X, so a boto3 range inside aiobotocore's botocore range
    # never sends the resolver back through boto3 releases it must reject.
    botocore = _requirement_of("aiobotocore", "botocore").specifier
    low, high = _bounds(botocore)
    boto3 = {name: Requirement(r) for name, rs in EXTRAS.items() for r in rs if "boto3" in r}
    assert boto3, "no extra names boto3 (moto and the bench need it)"
    for extra, requirement in boto3.items():
        boto3_low, boto3_high = _bounds(requirement.specifier)
        assert low <= boto3_low and boto3_high <= high, (
            f"the {extra} extra's {requirement} lies outside aiobotocore's botocore{botocore}"
        )


def _requirement_of(distribution: str, name: str) -> Requirement:
    for text in metadata.requires(distribution) or []:
        requirement = Requirement(text)
        if requirement.name == name and requirement.marker is None:
            return requirement
    raise AssertionError(f"{distribution} does not require {name}")


def _bounds(specifier: SpecifierSet) -> tuple[Version, Version]:
    """``>=low,<high``, the only form these pins take."""
    by_operator = {spec.operator: Version(spec.version) for spec in specifier}
    assert set(by_operator) == {">=", "<"}, f"not a >=,< range: {specifier}"
    return by_operator[">="], by_operator["<"]
