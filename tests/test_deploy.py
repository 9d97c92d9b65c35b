"""deploy/'s topology on loopback, without containers: moto as the S3 store, three
``vidproxy serve`` processes configured by environment as docker-compose.yml
configures its replicas, and a real nginx running deploy/nginx.conf with only
its addresses and file paths rewritten (plus an X-Upstream header naming the
replica that answered). Also: the manifests parse and agree with each other.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import NO_STALE_UPLOAD_SWEEP_ENV
from rigs.polling import poll
from rigs.processes import free_port, stop_process

from vidproxy.config import load_config
from vidproxy.web.server import CANCEL_GRACE_SECONDS

NGINX = "/usr/sbin/nginx"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
REPLICAS = 3
REVALIDATE_AFTER = 1  # seconds: VIDPROXY_CACHE_REVALIDATE_AFTER for the replicas
START_TIMEOUT = 20.0  # seconds for every process to answer
CACHE_TIMEOUT = 5.0  # seconds for a replica to finish filling its cache after a GET
# An overwrite shows through another replica's cache once its entry is older than
# revalidate_after (the next GET then checks S3); the rest is slack for slow machines.
SEEN_WITHIN = REVALIDATE_AFTER + 3.0
KEYS = 12  # enough that all keys landing on one replica is a one-in-100,000 event
REQUEST_TIMEOUT = 10.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def upstream(self) -> str:
        """The replica that answered: the last address nginx tried."""
        return self.headers["X-Upstream"].split(",")[-1].strip()


def http(method: str, url: str, body: bytes | None = None) -> Response:
    # Without a Content-Type of ours, urllib would send a form's.
    headers = {"Content-Type": "video/webm"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, dict(exc.headers), exc.read())


def is_ready(url: str) -> bool:
    try:
        return http("GET", url).status == 200
    except OSError:
        return False


# ---- the topology ----------------------------------------------------------------


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass
class Topology:
    nginx_url: str
    replicas: list[Replica]

    def replica(self, address: str) -> Replica:
        return next(r for r in self.replicas if r.address == address)

    def put(self, key: str, body: bytes) -> Response:
        response = http("PUT", f"{self.nginx_url}/videos/{key}", body)
        assert response.status == 201, response.body
        return response

    def get(self, key: str) -> Response:
        return http("GET", f"{self.nginx_url}/videos/{key}")


def nginx_config(source: str, listen: int, upstreams: list[int], run_dir: Path) -> str:
    """deploy/nginx.conf on loopback ports, with its files under ``run_dir``.
    Each rewrite must apply exactly as often as expected, so a change to the
    real file that this test would silently stop exercising fails here."""
    ports = iter(upstreams)
    edits: list[tuple[str, str | Callable[[re.Match[str]], str], int]] = [
        (r"(?m)^(\s*)listen 8080;", rf"\g<1>listen 127.0.0.1:{listen};", 1),
        (
            r"(?m)^(\s*)server vidproxy\d:8080 ",
            lambda m: f"{m[1]}server 127.0.0.1:{next(ports)} ",
            3,
        ),
        (r"(?m)^pid \S+;", f"pid {run_dir}/nginx.pid;", 1),
        (r"(?m)^error_log \S+", f"error_log {run_dir}/error.log", 1),
        (r"(?m)^(\s*)access_log \S+", rf"\g<1>access_log {run_dir}/access.log", 1),
        (r"(?m)^http \{\n", "http {\n" + _temp_paths(run_dir), 1),
        (
            r"(?m)^(\s*)location / \{\n",
            r"\g<0>\g<1>    add_header X-Upstream $upstream_addr always;\n",
            1,
        ),
    ]
    text = source
    for pattern, replacement, expected in edits:
        text, count = re.subn(pattern, replacement, text)
        assert count == expected, f"deploy/nginx.conf: {pattern!r} matched {count} times"
    # As root, nginx's workers would run as nobody, who cannot enter pytest's tmp dirs.
    return ("user root;\n" if os.geteuid() == 0 else "") + text


def _temp_paths(run_dir: Path) -> str:
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    return "".join(f"    {kind}_temp_path {run_dir}/{kind}_temp;\n" for kind in kinds)


def replica_env(moto: str, bucket: str, port: int, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    env.update(
        VIDPROXY_SERVER_HOST="127.0.0.1",
        VIDPROXY_SERVER_PORT=str(port),
        VIDPROXY_S3_BUCKET=bucket,
        VIDPROXY_S3_ENDPOINT_URL=moto,
        VIDPROXY_S3_ADDRESSING_STYLE="path",
        VIDPROXY_S3_CREATE_BUCKET="true",
        VIDPROXY_S3_MAX_ATTEMPTS="1",
        **NO_STALE_UPLOAD_SWEEP_ENV,  # one replica's sweep would abort the others' uploads
        VIDPROXY_CACHE_DIR=str(workdir / "cache"),
        VIDPROXY_CACHE_REVALIDATE_AFTER=str(REVALIDATE_AFTER),
        VIDPROXY_FS_DIR=str(workdir / "data"),
    )
    return env


def spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def wait_ready(procs: list[tuple[subprocess.Popen[bytes], Path, str]]) -> None:
    """Poll each readiness URL; fail at once, with its log, if a process exits."""

    def all_ready() -> bool:
        for proc, log, _ in procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        return all(is_ready(url) for _, _, url in procs)

    poll(all_ready, "vidproxy replicas and nginx ready", START_TIMEOUT)


def start_topology(moto: str, root: Path, procs: list[subprocess.Popen[bytes]]) -> Topology:
    """Start everything, appending each process to ``procs`` for the caller to stop."""
    bucket = f"deploy-{uuid.uuid4().hex[:12]}"
    replicas = []
    for n in range(1, REPLICAS + 1):
        workdir = root / f"vidproxy{n}"
        workdir.mkdir()
        port = free_port()
        argv = [sys.executable, "-m", "vidproxy", "serve"]
        env = replica_env(moto, bucket, port, workdir)
        proc = spawn(argv, workdir / "vidproxy.log", env=env, cwd=workdir)
        procs.append(proc)
        replicas.append(Replica(port, proc, workdir / "vidproxy.log"))
    wait_ready([(r.proc, r.log, f"{r.url}/readyz") for r in replicas])

    run_dir = root / "nginx"
    run_dir.mkdir()
    listen = free_port()
    conf = run_dir / "nginx.conf"
    source = (DEPLOY / "nginx.conf").read_text()
    conf.write_text(nginx_config(source, listen, [r.port for r in replicas], run_dir))
    argv = [NGINX, "-p", str(run_dir), "-e", str(run_dir / "error.log"), "-c", str(conf)]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr
    nginx = spawn([*argv, "-g", "daemon off;"], run_dir / "stderr.log")
    procs.append(nginx)
    url = f"http://127.0.0.1:{listen}"
    wait_ready([(nginx, run_dir / "error.log", f"{url}/healthz")])
    return Topology(url, replicas)


@pytest.fixture(scope="module")
def nginx_installed() -> None:
    if not Path(NGINX).is_file():
        pytest.skip("nginx is not installed")


@pytest.fixture(scope="module")
def make_topology(
    nginx_installed: None, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Topology]]:
    """Start topologies on demand; every process is stopped when the module ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def make() -> Topology:
        return start_topology(moto_endpoint, tmp_path_factory.mktemp("deploy"), procs)

    try:
        yield make
    finally:
        for proc in reversed(procs):
            stop_process(proc)


@pytest.fixture(scope="module")
def topology(make_topology: Callable[[], Topology]) -> Topology:
    """One topology shared by the tests that leave every process running."""
    return make_topology()


def upload_keys(topology: Topology, tag: str) -> dict[str, str]:
    """Upload ``KEYS`` objects through nginx; the replica that stored each."""
    return {
        key: topology.put(key, key.encode()).upstream
        for key in (f"{tag}/{n}.webm" for n in range(KEYS))
    }


# ---- the behaviours ----------------------------------------------------------------


def test_each_key_is_always_served_by_the_same_replica(topology: Topology) -> None:
    owners = upload_keys(topology, "route")

    for key, owner in owners.items():
        answers = [
            topology.get(key),
            topology.get(key),
            http("HEAD", f"{topology.nginx_url}/videos/{key}"),
        ]
        # A signed link carries a query string; it must not move the key.
        answers.append(http("GET", f"{topology.nginx_url}/videos/{key}?expires=1&unused=2"))
        assert {a.upstream for a in answers} == {owner}, key
        assert answers[0].body == key.encode()
    assert len(set(owners.values())) >= 2, "keys should spread over the replicas"


def test_each_replica_caches_only_its_own_keys(topology: Topology) -> None:
    owners = upload_keys(topology, "cache")
    key, owner = next(iter(owners.items()))
    others = [r for r in topology.replicas if r.address != owner]

    assert topology.get(key).headers["X-Cache"] == "MISS"
    poll(lambda: topology.get(key).headers["X-Cache"] == "HIT", "a cache hit", CACHE_TIMEOUT)

    for replica in others:  # asked directly, the others have never seen it
        assert http("GET", f"{replica.url}/videos/{key}").headers["X-Cache"] == "MISS"


def test_overwrite_through_another_replica_is_seen_within_revalidate_after(
    topology: Topology,
) -> None:
    key = "overwrite/clip.webm"
    owner = topology.put(key, b"version 1").upstream
    topology.get(key)
    poll(lambda: topology.get(key).headers["X-Cache"] == "HIT", "a cache hit", CACHE_TIMEOUT)
    other = next(r for r in topology.replicas if r.address != owner)

    assert http("PUT", f"{other.url}/videos/{key}", b"version 2").status == 201
    poll(lambda: topology.get(key).body == b"version 2", "the new version", SEEN_WITHIN)

    assert topology.get(key).upstream == owner


def test_a_killed_replica_loses_nothing_and_nginx_routes_around_it(
    make_topology: Callable[[], Topology],
) -> None:
    topology = make_topology()  # its own: this test leaves a replica dead
    owners = upload_keys(topology, "kill")
    victim = topology.replica(next(iter(owners.values())))
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)

    for key, owner in owners.items():
        response = topology.get(key)
        assert (response.status, response.body) == (200, key.encode()), key
        if owner == victim.address:
            assert response.upstream != victim.address
        else:  # consistent hashing: the other replicas keep their keys
            assert response.upstream == owner, key
    moved = next(k for k, o in owners.items() if o == victim.address)
    assert topology.put(moved, b"rewritten").upstream != victim.address
    assert topology.get(moved).body == b"rewritten"


# ---- the manifests ------------------------------------------------------------------


def test_compose_and_kubernetes_manifests_agree() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    replicas = sorted(s for s in compose["services"] if s.startswith("vidproxy"))
    upstreams = re.findall(r"server (vidproxy\d+):8080", (DEPLOY / "nginx.conf").read_text())
    assert replicas == sorted(upstreams) == ["vidproxy1", "vidproxy2", "vidproxy3"]
    services = [compose["services"][name] for name in replicas]
    assert len({s["volumes"][0] for s in services}) == REPLICAS, "a cache volume each"
    for service in services:
        env = service["environment"]
        loaded = load_config(None, env=env)
        for name in filter(lambda n: n.startswith("VIDPROXY_"), env):
            section, _, field = name.removeprefix("VIDPROXY_").lower().partition("_")
            assert hasattr(getattr(loaded, section, None), field), f"{name} sets nothing"
        shutdown = float(env["VIDPROXY_SERVER_SHUTDOWN_TIMEOUT"])
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace >= shutdown + CANCEL_GRACE_SECONDS

    docs = [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and "kind" in doc
    ]
    assert {"ConfigMap", "Service", "StatefulSet", "Ingress"} <= {d["kind"] for d in docs}
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    config = tomllib.loads(config_map["data"]["config.toml"])
    load_config(None, env={}, overrides=config)  # every key is one vidproxy knows
    (stateful,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = stateful["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = config["server"]["shutdown_timeout"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + CANCEL_GRACE_SECONDS


def tus(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> Response:
    sent = {"Tus-Resumable": "1.0.0", **headers}
    if body is not None:
        sent["Content-Type"] = "application/offset+octet-stream"
    request = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, dict(exc.headers), exc.read())


def test_every_request_of_one_tus_upload_reaches_one_replica(topology: Topology) -> None:
    created_on: set[str] = set()
    for n in range(KEYS):
        key = f"tus/{n}.webm"
        created = tus("POST", f"{topology.nginx_url}/uploads", {"Upload-Length": "6"})
        assert created.status == 201
        created_on.add(created.upstream)
        url = topology.nginx_url + created.headers["Location"]
        answers = [
            tus("PATCH", url, {"Upload-Offset": "0"}, b"abc"),
            tus("HEAD", url, {}),
            tus("PATCH", url + "?expires=1", {"Upload-Offset": "3"}, b"def"),
        ]
        assert [a.status for a in answers] == [204, 200, 204]
        assert len({a.upstream for a in answers}) == 1, key
        upload_id = created.headers["Location"].rsplit("/", 1)[1]
        assert topology.get(upload_id).body == b"abcdef"
    assert len(created_on) >= 2, "creations should spread over the replicas"
