"""config.py: defaults < TOML < VIDPROXY_* env < overrides; sizes; one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidproxy.config import Config, ConfigError, load_config, parse_size
from vidproxy.units import GiB, KiB, MiB

NO_ENV: dict[str, str] = {}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_env_or_overrides() -> None:
    assert load_config(None, env=NO_ENV) == Config()


def test_default_backend_is_fs() -> None:
    assert load_config(None, env=NO_ENV).backend == "fs"


def test_naming_a_bucket_selects_s3() -> None:
    assert load_config(None, env={"VIDPROXY_S3_BUCKET": "videos"}).backend == "s3"


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[server]\nport = 9000\n[fs]\ndir = "/srv/videos"\n')
    config = load_config(path, env=NO_ENV)
    assert (config.server.port, config.fs.dir) == (9000, "/srv/videos")


def test_env_overrides_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 9000\n")
    assert load_config(path, env={"VIDPROXY_SERVER_PORT": "9100"}).server.port == 9100


def test_overrides_override_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 9000\n")
    config = load_config(
        path, env={"VIDPROXY_SERVER_PORT": "9100"}, overrides={"server": {"port": 9200}}
    )
    assert config.server.port == 9200


def test_each_layer_only_changes_the_keys_it_names(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[server]\nhost = "0.0.0.0"\n')
    config = load_config(path, env={"VIDPROXY_SERVER_PORT": "9100"})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9100)
    assert config.server.max_upload_bytes == Config().server.max_upload_bytes


def test_env_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPROXY_FS_DIR", "/from/env")
    assert load_config(None).fs.dir == "/from/env"


def test_unrelated_env_vars_are_ignored() -> None:
    env = {"VIDPROXY_NOPE_X": "1", "VIDPROXY_SERVER_NOPE": "1", "SERVER_PORT": "1"}
    assert load_config(None, env=env) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("0", 0),
        ("8MiB", 8 * MiB),
        ("8 MiB", 8 * MiB),
        ("8mib", 8 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("2KiB", 2 * KiB),
        ("1GB", 1000**3),
        ("5m", 5 * 1000**2),
        ("100b", 100),
        (4096, 4096),
    ],
)
def test_sizes_are_parsed_with_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "8 parsecs", "-1", "1e6", "8MiB8", True, -5, 1.5])
def test_malformed_sizes_raise_value_error(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_from_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[s3]\npart_size = "16MiB"\n')
    assert load_config(path, env=NO_ENV).s3.part_size == 16 * MiB


def test_size_from_env() -> None:
    env = {"VIDPROXY_SERVER_MAX_UPLOAD_BYTES": "2GiB"}
    assert load_config(None, env=env).server.max_upload_bytes == 2 * GiB


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("Yes", True)])
def test_booleans_from_env(raw: str, expected: bool) -> None:
    assert load_config(None, env={"VIDPROXY_S3_EQUAL_PARTS": raw}).s3.equal_parts is expected


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"VIDPROXY_SERVER_PORT": "eighty"}, "server.port"),
        ({"VIDPROXY_SERVER_PORT": "70000"}, "server.port"),
        ({"VIDPROXY_SERVER_MAX_UPLOAD_BYTES": "lots"}, "server.max_upload_bytes"),
        ({"VIDPROXY_S3_PART_SIZE": "1MiB"}, "s3.part_size"),
        ({"VIDPROXY_S3_PART_SIZE": "6GiB"}, "s3.part_size"),
        ({"VIDPROXY_S3_EQUAL_PARTS": "maybe"}, "s3.equal_parts"),
        ({"VIDPROXY_S3_UPLOAD_CONCURRENCY": "0"}, "s3.upload_concurrency"),
        ({"VIDPROXY_S3_ADDRESSING_STYLE": "sideways"}, "s3.addressing_style"),
        ({"VIDPROXY_S3_CHECKSUM_MODE": "always"}, "s3.checksum_mode"),
        ({"VIDPROXY_SERVER_LOG_LEVEL": "loud"}, "server.log_level"),
        ({"VIDPROXY_S3_CONNECT_TIMEOUT": "-1"}, "s3.connect_timeout"),
        ({"VIDPROXY_S3_READ_TIMEOUT": "0"}, "s3.read_timeout"),
        ({"VIDPROXY_CACHE_IDLE_TTL": "0"}, "cache.idle_ttl"),
        ({"VIDPROXY_CACHE_MAX_BYTES": "10 quids"}, "cache.max_bytes"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_config(None, env=env)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nport = true\n", "server.port"),
        ('[server]\nport = "80"\nhost = 5\n', "server.host"),
        ("[s3]\npart_size = [1]\n", "s3.part_size"),
        ("[server]\nhots = 1\n", "server.hots"),
        ("[server]\nport = 8080.5\n", "server.port"),
        ("[s3]\nupload_concurrency = 2.9\n", "s3.upload_concurrency"),
    ],
)
def test_bad_toml_values_raise_config_error_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_config(write_toml(tmp_path, text), env=NO_ENV)


def test_whole_float_for_an_integer_is_accepted(tmp_path: Path) -> None:
    assert (
        load_config(write_toml(tmp_path, "[server]\nport = 8080.0\n"), env=NO_ENV).server.port
        == 8080
    )


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^sever: unknown section"):
        load_config(write_toml(tmp_path, "[sever]\nport = 1\n"), env=NO_ENV)


def test_top_level_value_instead_of_a_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^port: "):
        load_config(write_toml(tmp_path, "port = 1\n"), env=NO_ENV)


def test_malformed_toml_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(write_toml(tmp_path, "[server\nport = \n"), env=NO_ENV)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", env=NO_ENV)


def test_bad_override_raises_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^server.port: "):
        load_config(None, env=NO_ENV, overrides={"server": {"port": "http"}})


def test_the_shipped_config_toml_loads() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    assert load_config(shipped, env=NO_ENV) == Config()


def test_config_is_frozen() -> None:
    config = load_config(None, env=NO_ENV)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


# ---- the command line ---------------------------------------------------------


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "vidproxy", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[s3]\npart_size = "1MiB"\n', "s3.part_size"),
        ("[server]\nport = -1\n", "server.port"),
        ("[server\n", "bad.toml"),
    ],
)
def test_serve_with_a_bad_config_exits_non_zero_with_one_line(
    tmp_path: Path, text: str, named: str
) -> None:
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    result = run_cli(tmp_path, "serve", "--config", "bad.toml")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert named in result.stderr
    assert result.stdout == ""


def test_serve_with_a_missing_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", "--config", "nope.toml")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "vidproxy: config error: config file not found: nope.toml"
    ]
