"""Configuration: one frozen object built once at start-up.

Precedence, lowest first: the defaults below, ``config.toml`` (or
``--config PATH``), environment variables ``VIDPROXY_<SECTION>_<KEY>``, and
CLI flags. Every problem is reported as one ``ConfigError`` line naming the key;
``check_local_dirs`` adds the checks that need the disk, ``unknown_env_vars`` the
warnings for ``VIDPROXY_*`` variables that name no setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import shutil
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .s3limits import MAX_PART_SIZE, MIN_PART_SIZE
from .units import GiB, KiB, MiB, TiB

ENV_PREFIX = "VIDPROXY_"
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": KiB,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GiB,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": TiB,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", re.ASCII)
_INT_RE = re.compile(r"\s*[-+]?\d+\s*", re.ASCII)
_FLOAT_RE = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*", re.ASCII)
# How alike a misspelt name must be to a known one to be suggested (difflib's ratio).
_SUGGEST_CUTOFF = 0.6


class ConfigError(Exception):
    """A configuration value is missing, malformed or out of range."""


# A byte count; in files and env vars it may be written ``8MiB``.
Size = typing.NewType("Size", int)


def parse_size(text: str | int) -> int:
    """Parse ``8MiB``, ``1.5 GB``, ``4096`` into a byte count."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a size such as '8MiB', got {text!r}")
    match = _SIZE_RE.fullmatch(text)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(f"expected a size such as '8MiB', got {text!r}")
    whole, _, fraction = match.group(1).partition(".")
    # Integers, not floats: "2.3MB" is 2,300,000 bytes, 2**53 + 1 stays itself, and
    # 400 digits are a (huge) size rather than an OverflowError.
    scale: int = 10 ** len(fraction)  # typeshed: int ** int may be a float
    return int(whole) * unit + int(fraction or "0") * unit // scale


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Enforced by counting: aiohttp's client_max_size does not cover streamed bodies.
    max_upload_bytes: Size = Size(100 * GiB)
    # aiohttp has no body read deadline: a read that waits longer than this fails (408).
    body_timeout: float = 60.0
    # Past the grace period, an upload averaging fewer bytes a second fails (408),
    # so a trickling client cannot hold an upload slot for as long as it likes; 0 = off.
    min_upload_rate: Size = Size(16 * KiB)
    upload_rate_grace: float = 30.0
    # A request head (the first one from the connection's start, a later one from its
    # first byte) must arrive whole within this; slowloris heads are closed after it.
    header_timeout: float = 15.0
    # An idle kept-alive connection is closed after this (aiohttp's run_app default).
    keepalive_timeout: float = 75.0
    # Open connections at once; past it the one that has waited longest for a request
    # head is closed. 0: derived from the open-file limit (see limits.py).
    max_connections: int = 0
    # 503 with Retry-After past this many uploads at once, so memory stays bounded.
    max_concurrent_uploads: int = 64
    # On SIGTERM: how long in-flight requests may run before they are cancelled.
    shutdown_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    # Pages on these origins may read answers (CORS): "*" for any, exact
    # "scheme://host[:port]" otherwise; empty: none, only the service's own page.
    cors_origins: tuple[str, ...] = ()
    # Cache-Control on every object answer (GET, HEAD, 304), e.g. "public,
    # max-age=31536000, immutable" for ULID keys behind a CDN; empty: none.
    cache_control: str = ""


@dataclass(frozen=True)
class FsConfig:
    dir: str = "./data"


@dataclass(frozen=True)
class S3Config:
    bucket: str = ""
    endpoint_url: str = ""
    region: str = ""
    # "path" suits MinIO, Ceph and local endpoints; "auto" lets botocore choose.
    addressing_style: str = "auto"
    part_size: Size = Size(8 * MiB)
    upload_concurrency: int = 4
    # Keep every part the same size (R2 demands it) instead of growing them.
    equal_parts: bool = False
    checksum_mode: str = "when_required"
    # SigV4 hashes every body once more to sign it unless told not to; vidproxy
    # already hashes the whole upload, so by default it sends UNSIGNED-PAYLOAD.
    sign_payload: bool = False
    create_bucket: bool = False
    max_pool_connections: int = 64
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    # One S3 request, its retries included, fails after this (504 upstream_timeout):
    # botocore's timeouts do not cover every wait (a request stuck before its body).
    request_deadline: float = 120.0
    # Multipart uploads idle this long (no newer part) are aborted (at start, then
    # periodically), never this process's own; 0 = never.
    abort_stale_uploads_after: float = 86400.0


@dataclass(frozen=True)
class AuthConfig:
    # Empty: writes (reads) are open. A write token also grants reads.
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    signing_key: str = ""
    # Files holding the same (tokens one per line), so secrets stay out of config and env.
    write_tokens_file: str = ""
    read_tokens_file: str = ""
    signing_key_file: str = ""

    def __repr__(self) -> str:
        # Secrets never reach a log line, even through a debug print of the config.
        return (
            f"AuthConfig(write_tokens=<{len(self.write_tokens)}>, "
            f"read_tokens=<{len(self.read_tokens)}>, signing_key=<{bool(self.signing_key)}>)"
        )


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    dir: str = "./cache"
    max_bytes: Size = Size(10 * GiB)
    min_free_bytes: Size = Size(1 * GiB)
    max_object_bytes: Size = Size(5 * GiB)
    idle_ttl: float = 3600.0
    revalidate_after: float = 60.0
    fill_on_disconnect: bool = True
    # Also check fills against an S3 ETag that is the body's MD5 (~1.2 CPU-s per
    # GiB more); off for a store whose plain ETags are not MD5s.
    verify_etag_md5: bool = True
    # Entries found at start are hashed again at this rate before they are hits.
    verify_bytes_per_second: Size = Size(256 * MiB)


@dataclass(frozen=True)
class UploadsConfig:
    """Resumable (tus) uploads at /uploads."""

    # An unfinished upload is dropped this long after its last PATCH.
    expire_after: float = 86400.0
    # How often expired uploads are looked for; 0: expire_after / 4, at most an hour.
    sweep_interval: float = 0.0

    @property
    def sweep_every(self) -> float:
        """Never less often than ``expire_after``, so an abandoned upload goes in time."""
        if self.sweep_interval > 0:
            return min(self.sweep_interval, self.expire_after)
        return min(max(self.expire_after / 4, 0.5), 3600.0)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    fs: FsConfig = field(default_factory=FsConfig)
    s3: S3Config = field(default_factory=S3Config)
    cache: CacheConfig = field(default_factory=CacheConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)

    @property
    def backend(self) -> str:
        """``s3`` once a bucket is named, else the embedded ``fs`` store."""
        return "s3" if self.s3.bucket else "fs"


_CHOICES = {
    ("s3", "checksum_mode"): {"when_required", "when_supported"},
    ("s3", "addressing_style"): {"auto", "path", "virtual"},
    ("server", "log_level"): {"debug", "info", "warning", "error"},
    ("server", "log_format"): {"text", "json"},
}


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the config from a TOML file, then env vars, then explicit overrides."""
    layers: dict[str, dict[str, Any]] = {}
    if path is not None:
        _merge(layers, _read_toml(Path(path)))
    _merge(layers, _from_env(os.environ if env is None else env))
    if overrides:
        _merge(layers, {k: dict(v) for k, v in overrides.items()})
    config = _build(layers)
    _validate(config)
    return dataclasses.replace(config, auth=_read_secret_files(config.auth))


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a [{section}] table")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layers: dict[str, dict[str, Any]] = {}
    for section in _sections():
        prefix = f"{ENV_PREFIX}{section.upper()}_"
        for name in _field_types(section):
            value = env.get(prefix + name.upper())
            if value is not None:
                layers.setdefault(section, {})[name] = value
    return layers


def unknown_env_vars(env: Mapping[str, str], also_known: Iterable[str] = ()) -> list[str]:
    """One warning per ``VIDPROXY_*`` variable that names no setting (a typo
    would otherwise be ignored without a word); ``also_known`` are other
    programs' variables that share the prefix (the client's ``VIDPROXY_URL``)."""
    settings = {
        f"{section.upper()}_{name.upper()}"
        for section in _sections()
        for name in _field_types(section)
    }
    skip = {ENV_PREFIX + name for name in settings} | set(also_known)
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in skip or _is_service_link(name, env[name]):
            continue
        close = _closest_env_setting(name.removeprefix(ENV_PREFIX), settings)
        hint = f" (did you mean {ENV_PREFIX}{close}?)" if close else ""
        warnings.append(f"{name} names no setting and is ignored{hint}")
    return warnings


def _closest_env_setting(suffix: str, settings: set[str]) -> str | None:
    """A setting whose key is ``suffix`` without its section (``PORT``:
    ``SERVER_PORT``), else the closest spelling."""
    same_key = sorted(s for s in settings if s.endswith(f"_{suffix}"))
    return same_key[0] if same_key else _closest(suffix, settings)


# What Kubernetes injects into every pod for a Service named "vidproxy"
# (VIDPROXY_SERVICE_HOST, VIDPROXY_PORT=tcp://10.0.0.1:80, VIDPROXY_PORT_80_TCP_ADDR, ...).
_SERVICE_LINK_RE = re.compile(
    r"VIDPROXY_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)|VIDPROXY_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?"
)
_SERVICE_LINK_URL_RE = re.compile(r"(tcp|udp|sctp)://\S+")


def _is_service_link(name: str, value: str) -> bool:
    if name == f"{ENV_PREFIX}PORT":  # a typo for VIDPROXY_SERVER_PORT, unless a service link
        return bool(_SERVICE_LINK_URL_RE.fullmatch(value))
    return bool(_SERVICE_LINK_RE.fullmatch(name))


def _merge(into: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in layer.items():
        into.setdefault(section, {}).update(values)


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(_sections()[section])


def _build(layers: dict[str, dict[str, Any]]) -> Config:
    sections = _sections()
    built: dict[str, Any] = {}
    for section, values in layers.items():
        if section not in sections:
            raise ConfigError(f"{section}: unknown section{_did_you_mean(section, sections)}")
        types_ = _field_types(section)
        kwargs = {}
        for name, raw in values.items():
            if name not in types_:
                raise ConfigError(f"{section}.{name}: unknown key{_key_hint(section, name)}")
            kwargs[name] = _coerce(f"{section}.{name}", types_[name], raw)
        built[section] = sections[section](**kwargs)
    return Config(**built)


def _key_hint(section: str, name: str) -> str:
    """The same key in another section (``[server] bucket``), else the closest
    key of this section."""
    elsewhere = [f"{other}.{name}" for other in _sections() if name in _field_types(other)]
    if elsewhere:
        return f" (did you mean {elsewhere[0]}?)"
    close = _closest(name, _field_types(section))
    return f" (did you mean {section}.{close}?)" if close else ""


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = _closest(name, known)
    return f" (did you mean {close}?)" if close else ""


def _closest(name: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=_SUGGEST_CUTOFF)
    return matches[0] if matches else None


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        return _convert(kind, raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _convert(kind: Any, raw: Any) -> Any:
    if kind is Size:
        return parse_size(raw)
    if kind is bool:
        return _to_bool(raw)
    if kind is int:
        return _to_int(raw)
    if kind is float:
        return _to_float(raw)
    if kind == tuple[str, ...]:
        return _to_strings(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        return raw
    raise TypeError(f"unsupported setting type {kind!r}")


def _to_int(raw: Any) -> int:
    # Messages in the setting's terms: int()'s own ("invalid literal for int()
    # with base 10") would reach the operator verbatim.
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT_RE.fullmatch(raw):
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise ValueError(f"expected a whole number, got {raw!r}")


def _to_float(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return float(raw)
    if isinstance(raw, str) and _FLOAT_RE.fullmatch(raw):
        return float(raw)
    raise ValueError(f"expected a number, got {raw!r}")


def _to_strings(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected a list of strings")
    # A blank entry is refused rather than dropped: a template whose secret was
    # missing ("${WRITE_TOKEN}" unset) must not start with writes open.
    if not all(item.strip() for item in items):
        raise ValueError("an entry is empty or blank")
    return tuple(item.strip() for item in items)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _validate(config: Config) -> None:
    for (section, name), allowed in _CHOICES.items():
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"{section}.{name}: expected one of {sorted(allowed)}, got {value!r}")
    s3 = config.s3
    if not MIN_PART_SIZE <= s3.part_size <= MAX_PART_SIZE:
        raise ConfigError("s3.part_size: must be between 5MiB and 5GiB (S3's part limits)")
    checks = [
        ("server.port", 0 <= config.server.port <= 65535, "must be a TCP port (0-65535)"),
        ("s3.upload_concurrency", s3.upload_concurrency >= 1, "must be at least 1"),
        ("s3.max_pool_connections", s3.max_pool_connections >= 1, "must be at least 1"),
        ("s3.max_attempts", s3.max_attempts >= 1, "must be at least 1"),
        ("s3.connect_timeout", s3.connect_timeout > 0, "must be positive"),
        ("s3.read_timeout", s3.read_timeout > 0, "must be positive"),
        ("s3.request_deadline", s3.request_deadline > 0, "must be positive"),
        ("server.body_timeout", config.server.body_timeout > 0, "must be positive"),
        ("server.upload_rate_grace", config.server.upload_rate_grace >= 0, "must not be negative"),
        ("server.header_timeout", config.server.header_timeout > 0, "must be positive"),
        ("server.keepalive_timeout", config.server.keepalive_timeout > 0, "must be positive"),
        ("server.max_connections", config.server.max_connections >= 0, "must not be negative"),
        ("server.shutdown_timeout", config.server.shutdown_timeout >= 0, "must not be negative"),
        (
            "server.max_concurrent_uploads",
            config.server.max_concurrent_uploads >= 1,
            "must be at least 1",
        ),
        ("s3.abort_stale_uploads_after", s3.abort_stale_uploads_after >= 0, "must not be negative"),
        ("cache.idle_ttl", config.cache.idle_ttl > 0, "must be positive"),
        ("uploads.expire_after", config.uploads.expire_after > 0, "must be positive"),
        ("uploads.sweep_interval", config.uploads.sweep_interval >= 0, "must not be negative"),
        ("cache.revalidate_after", config.cache.revalidate_after >= -1, "must be -1 or more"),
        (
            "s3.endpoint_url",
            _is_endpoint_url(s3.endpoint_url),
            f"expected an http:// or https:// URL such as http://127.0.0.1:9000, "
            f"got {s3.endpoint_url!r}",
        ),
        # Empty means "no signed URLs"; blank would be a key anyone can guess.
        ("auth.signing_key", not _is_blank(config.auth.signing_key), "is blank"),
        (
            "cache.verify_bytes_per_second",
            config.cache.verify_bytes_per_second > 0,
            "must be positive",
        ),
    ]
    for name, ok, message in checks:
        if not ok:
            raise ConfigError(f"{name}: {message}")
    _validate_web_headers(config.server)


def _validate_web_headers(server: ServerConfig) -> None:
    # Checked here: a bad header value would raise at send time, on every answer.
    for origin in server.cors_origins:
        if origin != "*" and not _is_origin(origin):
            raise ConfigError(
                f'server.cors_origins: expected "*" or an origin such as '
                f"https://player.example (scheme, host, port; no path), got {origin!r}"
            )
    if not all(" " <= c <= "~" for c in server.cache_control):
        raise ConfigError("server.cache_control: must be printable ASCII on one line")


def _is_origin(text: str) -> bool:
    """An origin as browsers send it in ``Origin`` (RFC 6454 §6.1)."""
    if not _is_endpoint_url(text) or text.endswith("/"):
        return False
    parts = urlsplit(text)
    return not (parts.path or parts.query or parts.fragment or parts.username)


_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", re.ASCII)


def _is_endpoint_url(url: str) -> bool:
    """Empty (AWS), or what botocore will accept as an endpoint: checked here
    so a typo is one line naming the key, not botocore's traceback at start."""
    if not url:
        return True
    if any(c.isspace() or not c.isprintable() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is no port
    except ValueError:
        return False
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and (
        bool(_HOSTNAME_RE.fullmatch(host)) or _is_ipv6(host)
    )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _is_blank(text: str) -> bool:
    return bool(text) and not text.strip()


def _read_secret_files(auth: AuthConfig) -> AuthConfig:
    """Fill tokens and the signing key from their ``*_file`` settings."""
    changes: dict[str, Any] = {}
    for name in ("write_tokens", "read_tokens", "signing_key"):
        setting, path = f"auth.{name}_file", getattr(auth, f"{name}_file")
        if not path:
            continue
        if not path.strip():
            raise ConfigError(f"{setting}: is blank")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            # Not the decoder's message: it quotes the offending bytes of a secret.
            raise ConfigError(f"{setting}: {path} is not UTF-8 text (byte {exc.start})") from None
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        # An empty file is a secret that did not arrive (an unmounted volume, a
        # failed render), never "leave this access open".
        if not lines:
            raise ConfigError(f"{setting}: {path} holds no {name.replace('_', ' ')}")
        changes[name] = lines if name.endswith("tokens") else "".join(lines)
    return dataclasses.replace(auth, **changes) if changes else auth


def check_local_dirs(config: Config) -> list[str]:
    """Start-up checks that need the disk: the directories vidproxy will write
    can be made, and the cache's free-space floor fits its disk. Raises
    ``ConfigError`` naming the key; returns warnings (one line each)."""
    if config.backend == "fs":
        _usable_dir("fs.dir", config.fs.dir)
        return []
    if not config.cache.enabled:
        return []
    disk = shutil.disk_usage(_usable_dir("cache.dir", config.cache.dir))
    floor = config.cache.min_free_bytes
    if floor >= disk.total:
        raise ConfigError(
            f"cache.min_free_bytes: {_human_size(floor)} is more than the whole disk under "
            f"cache.dir ({_human_size(disk.total)}): the cache could never store anything"
        )
    if floor >= disk.free:
        return [
            f"cache.min_free_bytes: {_human_size(floor)} is more than is free under cache.dir "
            f"({_human_size(disk.free)}): nothing is cached until space is freed"
        ]
    return []


def _usable_dir(setting: str, directory: str) -> Path:
    """The directory itself, or the nearest existing parent it would be made in;
    without creating anything, so a failed start leaves no trace."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"{setting}: {path} is a file, not a directory ({directory})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting}: {path} is not writable ({directory})")
    return path


def _human_size(size: int) -> str:
    for unit, name in ((TiB, "TiB"), (GiB, "GiB")):
        if size >= unit:
            return f"{size / unit:.1f} {name}"
    return f"{size / MiB:.1f} MiB"
