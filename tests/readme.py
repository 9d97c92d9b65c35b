"""The README's shell commands, read as a user copies them: the ``sh`` code blocks
of one section, a trailing ``\\`` joining a line to the next, comments dropped."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    """The text under ``## title`` up to the next heading of that level."""
    text = README.read_text(encoding="utf-8")
    _, found, rest = text.partition(f"\n## {title}\n")
    assert found, f"the README has no section {title!r}"
    return rest.split("\n## ", 1)[0]


def shell_commands(title: str) -> list[str]:
    commands: list[str] = []
    for block in _SH_BLOCK.findall(section(title)):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def command_with(title: str, *texts: str) -> str:
    """The one command of the section that contains each of ``texts``."""
    found = [c for c in shell_commands(title) if all(text in c for text in texts)]
    assert len(found) == 1, f"{len(found)} commands with {texts} in {title!r}: {found}"
    return found[0]


def steps(command: str) -> list[str]:
    """The commands of an ``a && b && c`` list."""
    return [step.strip() for step in command.split(" && ")]


def env_and_argv(step: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=value ... program args``: the variables set for it, and its argv."""
    words = shlex.split(step)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


_CONSOLE_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)


def console_session(title: str) -> list[tuple[str, str]]:
    """The ``console`` blocks of one section as (command, what it prints) pairs:
    a line ``$ command``, then its output up to the next command or blank line."""
    pairs: list[tuple[str, list[str]]] = []
    for block in _CONSOLE_BLOCK.findall(section(title)):
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            elif line and pairs:
                pairs[-1][1].append(line)
    return [(command, "".join(f"{line}\n" for line in output)) for command, output in pairs]
