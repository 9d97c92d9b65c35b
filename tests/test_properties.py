"""Properties, checked with hypothesis against small reference models written from
the rules themselves: key validation (and that no accepted key can name a path
outside its directory) and config sizes. Range parsing and resolution have
theirs in test_conditions.py."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from rigs.app import serving
from yarl import URL

from vidproxy.config import ConfigError, load_config, parse_size
from vidproxy.errors import InvalidKey
from vidproxy.keys import MAX_KEY_BYTES, key_digest, validate_key

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- keys -------------------------------------------------------------------------------

# Every code point, surrogates and controls included.
any_char = st.characters(codec=None, exclude_categories=())
key_chars = st.sampled_from("/.\\\x00\x1f\x7f ab%?#+;~é\u2028\U0001f600") | any_char


def key_is_valid(key: str) -> bool:
    """The documented rule, restated: 1-1024 bytes of UTF-8, no control characters,
    no backslash, no empty, '.' or '..' segment."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return False
    return (
        1 <= len(key.encode()) <= MAX_KEY_BYTES
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)
        and "\\" not in key
        and all(segment not in ("", ".", "..") for segment in key.split("/"))
    )


@PROPERTY
@given(st.text(key_chars, max_size=40) | st.text(any_char, min_size=1000, max_size=1100))
@example("a" * MAX_KEY_BYTES)
@example("é" * (MAX_KEY_BYTES // 2) + "x")
@example("a/../b")
@example("\ud800")
def test_validate_key_accepts_exactly_the_documented_keys(key: str) -> None:
    try:
        accepted = validate_key(key)
    except InvalidKey:
        assert not key_is_valid(key)
    else:
        assert key_is_valid(key)
        assert accepted == key


valid_keys = st.text(key_chars, min_size=1, max_size=30).filter(key_is_valid)


@PROPERTY
@given(valid_keys)
def test_no_valid_key_names_a_path_outside_its_directory(key: str) -> None:
    root = Path("/srv/vidproxy/objects")
    digest = key_digest(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    for name in (f"{digest}.json", f"{digest}.01ARZ3NDEKTSV4RRFFQ69G5FAV"):
        path = (root / digest[:2] / name).resolve()
        assert os.path.commonpath([root, path]) == str(root)


def stored_digests(objects: Path) -> set[str]:
    return {p.name.split(".")[0] for p in objects.rglob("*") if p.is_file()}


async def _round_trip(keys: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, env={}, overrides={"fs": {"dir": tmp}})
        # A fresh vidproxy per example: hypothesis calls this outside any fixture.
        async with serving(config) as client:
            base = str(client.make_url("")).rstrip("/")
            async with aiohttp.ClientSession() as http:
                for i, key in enumerate(keys):
                    url = URL(base + "/videos/" + quote(key, safe="/"), encoded=True)
                    async with http.put(url, data=b"%d" % i) as response:
                        assert response.status == 201, (key, await response.text())
                        assert unquote(response.headers["Location"]) == f"/videos/{key}"
                        assert (await response.json())["key"] == key
                    async with http.get(url) as response:
                        assert (response.status, await response.read()) == (200, b"%d" % i)
                async with http.get(base + "/videos", params={"limit": "1000"}) as response:
                    listed = [item["key"] for item in (await response.json())["items"]]
                assert sorted(listed) == sorted(keys)
        assert stored_digests(Path(tmp, "objects")) == {key_digest(k) for k in keys}


@settings(deadline=None, max_examples=15, suppress_health_check=list(HealthCheck))
@given(st.lists(valid_keys, min_size=1, max_size=8, unique=True))
def test_every_valid_key_round_trips_over_http(keys: list[str]) -> None:
    asyncio.run(_round_trip(keys))


# ---- config sizes ------------------------------------------------------------------------

UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
    "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
    "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
unit_spellings = st.sampled_from(sorted(UNITS)).flatmap(
    lambda u: st.tuples(st.just(u), st.sampled_from([u, u.upper(), u.capitalize()]))
)


@PROPERTY
@given(st.integers(0, 10**30), unit_spellings, st.sampled_from(["", " ", "  "]))
@example(2**53 + 1, ("", ""), "")
def test_whole_sizes_parse_exactly(number: int, unit: tuple[str, str], space: str) -> None:
    canonical, written = unit
    assert parse_size(f"{space}{number}{space}{written}{space}") == number * UNITS[canonical]


@PROPERTY
@given(
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    unit_spellings,
)
@example(Decimal("2.3"), ("mb", "MB"))
@example(Decimal("0.1"), ("kb", "kb"))
def test_fractional_sizes_round_down_to_whole_bytes(number: Decimal, unit: tuple[str, str]) -> None:
    canonical, written = unit
    text = f"{number:f}{written}"
    assume(re.fullmatch(r"\d+(\.\d+)?", f"{number:f}"))
    assert parse_size(text) == int(number * UNITS[canonical])


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\A\s*[0-9]{1,400}(\.[0-9]{1,400})?\s*[a-zA-Z]{0,4}\s*\Z"),
        st.from_regex(r"\A[-+]?[0-9\u0660-\u0669\uff10-\uff19.eE]{1,12}[kKmMgG]?[iI]?[bB]?\Z"),
    )
)
@example("9" * 400)
@example("9" * 320 + "TiB")
@example("\u0665MiB")
@example("-5")
def test_any_size_text_is_a_byte_count_or_a_value_error(text: str) -> None:
    try:
        value = parse_size(text)
    except ValueError:
        return
    assert isinstance(value, int) and value >= 0
    assert re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]*\s*", text)


@PROPERTY
@given(st.text(max_size=12) | st.from_regex(r"\A[0-9]{300,330}\Z"))
def test_a_bad_size_in_the_environment_is_a_config_error_naming_the_key(text: str) -> None:
    try:
        config = load_config(None, env={"VIDPROXY_SERVER_MAX_UPLOAD_BYTES": text})
    except ConfigError as exc:
        assert str(exc).startswith("server.max_upload_bytes: ")
    else:
        assert config.server.max_upload_bytes == parse_size(text)
