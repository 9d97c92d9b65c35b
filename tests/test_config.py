"""config.py: defaults < TOML < VIDPROXY_* env < overrides; sizes; one-line errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vidproxy.config import (
    Config,
    ConfigError,
    check_local_dirs,
    load_config,
    parse_size,
    unknown_env_vars,
)
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


# ---- messages in the setting's terms, with a suggestion ----------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIDPROXY_SERVER_PORT": "abc"}, "server.port: expected a whole number, got 'abc'"),
        ({"VIDPROXY_SERVER_PORT": "80.5"}, "server.port: expected a whole number, got '80.5'"),
        (
            {"VIDPROXY_SERVER_BODY_TIMEOUT": "soon"},
            "server.body_timeout: expected a number, got 'soon'",
        ),
        (
            {"VIDPROXY_SERVER_BODY_TIMEOUT": "nan"},
            "server.body_timeout: expected a number, got 'nan'",
        ),
    ],
)
def test_bad_numbers_are_reported_without_python_text(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, env=env)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "server.prot: unknown key (did you mean server.port?)"),
        ("[s3]\nbuckt = 'v'\n", "s3.buckt: unknown key (did you mean s3.bucket?)"),
        ("[server]\nbucket = 'v'\n", "server.bucket: unknown key (did you mean s3.bucket?)"),
        ("[server]\nzzz = 1\n", "server.zzz: unknown key"),
        ("[sever]\nport = 1\n", "sever: unknown section (did you mean server?)"),
        ("[xyz]\n", "xyz: unknown section"),
    ],
)
def test_an_unknown_key_or_section_gets_a_suggestion(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write_toml(tmp_path, text), env=NO_ENV)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        (
            {"VIDPROXY_SERVER_PROT": "9000"},
            "VIDPROXY_SERVER_PROT names no setting and is ignored "
            "(did you mean VIDPROXY_SERVER_PORT?)",
        ),
        (
            {"VIDPROXY_PORT": "9000"},
            "VIDPROXY_PORT names no setting and is ignored (did you mean VIDPROXY_SERVER_PORT?)",
        ),
        ({"VIDPROXY_ZZZ": "1"}, "VIDPROXY_ZZZ names no setting and is ignored"),
    ],
)
def test_a_misspelt_env_var_is_warned_about(env: dict[str, str], warning: str) -> None:
    assert unknown_env_vars(env) == [warning]
    assert load_config(None, env=env) == Config()  # and otherwise ignored


def test_settings_the_client_and_kubernetes_service_links_are_not_warned_about() -> None:
    env = {
        "VIDPROXY_SERVER_PORT": "9000",
        "VIDPROXY_URL": "http://x",
        "VIDPROXY_TOKEN": "t",
        # What Kubernetes injects for a Service named vidproxy.
        "VIDPROXY_SERVICE_HOST": "10.0.0.1",
        "VIDPROXY_SERVICE_PORT": "80",
        "VIDPROXY_SERVICE_PORT_HTTP": "80",
        "VIDPROXY_PORT": "tcp://10.0.0.1:80",
        "VIDPROXY_PORT_80_TCP": "tcp://10.0.0.1:80",
        "VIDPROXY_PORT_80_TCP_PROTO": "tcp",
        "VIDPROXY_PORT_80_TCP_PORT": "80",
        "VIDPROXY_PORT_80_TCP_ADDR": "10.0.0.1",
        "HOME": "/root",
    }
    assert unknown_env_vars(env, also_known=("VIDPROXY_URL", "VIDPROXY_TOKEN")) == []


# ---- settings that would start broken ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "localhost:9000",
        "ftp://h",
        "http://",
        "http://h:99999",
        "http://a b",
        "http://-h",
    ],
)
def test_a_malformed_endpoint_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^s3.endpoint_url: expected an http:// or https:// URL"):
        load_config(None, env={"VIDPROXY_S3_ENDPOINT_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "https://a1.r2.cloudflarestorage.com",
        "http://[::1]:9000",
        "http://minio:9000/",
    ],
)
def test_endpoint_urls_botocore_accepts_load(url: str) -> None:
    assert load_config(None, env={"VIDPROXY_S3_ENDPOINT_URL": url}).s3.endpoint_url == url


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"VIDPROXY_AUTH_WRITE_TOKENS": " "}, "auth.write_tokens"),
        ({"VIDPROXY_AUTH_WRITE_TOKENS": ""}, "auth.write_tokens"),  # "${WRITE_TOKEN}", unset
        ({"VIDPROXY_AUTH_WRITE_TOKENS": "tok1,,tok2"}, "auth.write_tokens"),
        ({"VIDPROXY_AUTH_READ_TOKENS": "tok, "}, "auth.read_tokens"),
        ({"VIDPROXY_AUTH_SIGNING_KEY": "  "}, "auth.signing_key"),
        ({"VIDPROXY_AUTH_WRITE_TOKENS_FILE": " "}, "auth.write_tokens_file"),
    ],
)
def test_a_blank_secret_is_a_config_error(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_config(None, env=env)


def test_a_blank_token_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[auth]\nwrite_tokens = [" "]\n')
    with pytest.raises(ConfigError, match=r"^auth.write_tokens: an entry is empty or blank"):
        load_config(path, env=NO_ENV)


@pytest.mark.parametrize("name", ["write_tokens", "read_tokens", "signing_key"])
@pytest.mark.parametrize("text", ["", "\n  \n\t\n"])
def test_an_empty_secret_file_is_a_config_error(tmp_path: Path, name: str, text: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(text)
    env = {f"VIDPROXY_AUTH_{name.upper()}_FILE": str(secret)}
    with pytest.raises(ConfigError, match=rf"^auth.{name}_file: {secret} holds no "):
        load_config(None, env=env)


def s3_config(tmp_path: Path, **cache: Any) -> Config:
    overrides = {"s3": {"bucket": "videos"}, "cache": {"dir": str(tmp_path / "cache"), **cache}}
    return load_config(None, env=NO_ENV, overrides=overrides)


def test_directories_under_a_file_are_config_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    fs = load_config(None, env=NO_ENV, overrides={"fs": {"dir": str(a_file / "data")}})
    with pytest.raises(ConfigError, match=rf"^fs.dir: {a_file} is a file, not a directory"):
        check_local_dirs(fs)
    on_file = load_config(None, env=NO_ENV, overrides={"fs": {"dir": str(a_file)}})
    with pytest.raises(ConfigError, match=rf"^fs.dir: {a_file} is a file"):
        check_local_dirs(on_file)
    cached = s3_config(tmp_path, dir=str(a_file / "deep" / "cache"))
    with pytest.raises(ConfigError, match=rf"^cache.dir: {a_file} is a file, not a directory"):
        check_local_dirs(cached)


def test_usable_directories_pass_and_nothing_is_created(tmp_path: Path) -> None:
    fs = load_config(None, env=NO_ENV, overrides={"fs": {"dir": str(tmp_path / "new" / "data")}})
    assert check_local_dirs(fs) == []
    assert check_local_dirs(s3_config(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_a_free_space_floor_larger_than_the_disk_is_a_config_error(tmp_path: Path) -> None:
    disk = shutil.disk_usage(tmp_path)
    with pytest.raises(ConfigError, match=r"^cache.min_free_bytes: .* more than the whole disk"):
        check_local_dirs(s3_config(tmp_path, min_free_bytes=disk.total))
    # Disabled, the cache needs no disk.
    assert check_local_dirs(s3_config(tmp_path, min_free_bytes=disk.total, enabled=False)) == []


def test_a_free_space_floor_above_what_is_free_is_a_warning(tmp_path: Path) -> None:
    disk = shutil.disk_usage(tmp_path)
    [warning] = check_local_dirs(
        s3_config(tmp_path, min_free_bytes=disk.free + (disk.total - disk.free) // 2)
    )
    assert warning.startswith("cache.min_free_bytes: ") and "nothing is cached" in warning


# ---- the command line ---------------------------------------------------------


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")} | (env or {})
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


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a start that failed printed, after checking it was exit 2."""
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "Traceback" not in line
    return line


def broken_setting(tmp_path: Path, key: str) -> dict[str, str]:
    """The environment that sets ``key`` to a value that would start broken."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    empty = tmp_path / "empty.tokens"
    empty.write_text("")
    s3 = {"VIDPROXY_S3_BUCKET": "videos", "VIDPROXY_S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    return {
        "fs.dir": {"VIDPROXY_FS_DIR": str(a_file / "data")},
        "cache.dir": {**s3, "VIDPROXY_CACHE_DIR": str(a_file / "cache")},
        "s3.endpoint_url": {**s3, "VIDPROXY_S3_ENDPOINT_URL": "not a url"},
        "cache.min_free_bytes": {**s3, "VIDPROXY_CACHE_MIN_FREE_BYTES": "1000000TB"},
        "auth.write_tokens": {"VIDPROXY_AUTH_WRITE_TOKENS": " "},
        "auth.write_tokens_file": {"VIDPROXY_AUTH_WRITE_TOKENS_FILE": str(empty)},
        "server.port": {"VIDPROXY_SERVER_PORT": "80x"},
    }[key]


@pytest.mark.parametrize(
    "key",
    [
        "fs.dir",
        "cache.dir",
        "s3.endpoint_url",
        "cache.min_free_bytes",
        "auth.write_tokens",
        "auth.write_tokens_file",
        "server.port",
    ],
)
def test_serve_with_a_setting_that_would_start_broken_exits_2_naming_the_key(
    tmp_path: Path, key: str
) -> None:
    line = one_error_line(run_cli(tmp_path, "serve", env=broken_setting(tmp_path, key)))
    assert line.startswith(f"vidproxy: config error: {key}: ")
    assert "invalid literal" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "empty.tokens"]


def test_a_blank_token_in_config_toml_stops_serve(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[auth]\nwrite_tokens = [" "]\n')
    line = one_error_line(run_cli(tmp_path, "serve"))
    assert line == "vidproxy: config error: auth.write_tokens: an entry is empty or blank"


def test_a_misspelt_key_in_config_toml_gets_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[server]\nprot = 9000\n")
    line = one_error_line(run_cli(tmp_path, "serve"))
    assert line == "vidproxy: config error: server.prot: unknown key (did you mean server.port?)"


def test_a_port_in_use_is_said_once_with_a_hint_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"VIDPROXY_FS_DIR": str(tmp_path / "data"), "VIDPROXY_SERVER_PROT": "1"}
        result = run_cli(tmp_path, "serve", "--port", str(port), env=env)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    *logged, last = result.stderr.strip().splitlines()
    assert last == (
        f"vidproxy: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another process listens there: stop it, or pick another port with --port)"
    )
    assert result.stderr.count(str(port)) == 1
    # The misspelt variable was warned about before the start, in one line.
    [warning] = [line for line in logged if "VIDPROXY_SERVER_PROT" in line]
    assert " WARNING " in warning and "did you mean VIDPROXY_SERVER_PORT?" in warning
