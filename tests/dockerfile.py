"""Just enough of a Dockerfile parser for tests: stages, instructions, JSON forms.

Follows Docker's reference: parser directives on top, comment lines dropped (also
inside a continued instruction), ``\\`` continues a line, global ``ARG``s before
the first ``FROM`` expand in ``FROM`` lines.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuations joined

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form's list, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``--name=value`` options before the arguments (COPY, HEALTHCHECK)."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            option, _, rest = rest.partition(" ")
            name, _, value = option[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


@dataclass
class Stage:
    base: str  # global ARGs expanded
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def effective(self, keyword: str) -> Instruction:
        """The instruction that counts (the last one); fails when there is none."""
        found = self.last(keyword)
        assert found is not None, f"no {keyword} in the stage"
        return found

    def env(self) -> dict[str, str]:
        """Every ENV of the stage, in order (``$VAR`` left as written)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:  # legacy ENV NAME value
                values[words[0]] = " ".join(words[1:])
                continue
            values.update(word.split("=", 1) for word in words)  # type: ignore[misc]
        return values


def instructions(text: str) -> list[Instruction]:
    lines = text.splitlines()
    while lines and re.match(r"#\s*\w+\s*=", lines[0]):  # parser directives
        lines.pop(0)
    found: list[Instruction] = []
    pending = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return found


def stages(path: Path) -> list[Stage]:
    """The build stages, in order; the last one is the image."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "ARG" and not result:
            name, _, default = instruction.args.partition("=")
            global_args[name.strip()] = default.strip()
        elif instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--platform")]
            base = _VARIABLE.sub(lambda m: global_args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif result:
            result[-1].instructions.append(instruction)
    return result


def dockerignore(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
