"""fs: a data file that no longer holds the recorded number of bytes (cut
short, grown, deleted behind vidproxy's back) answers ``500 object_damaged``
in JSON, never bytes that look complete; the key can still be deleted or
overwritten."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cache_rig import random_bytes

from vidproxy.config import Config
from vidproxy.units import MiB

SIZE = 2 * MiB


def data_file(root: Path) -> Path:
    [path] = [p for p in (root / "objects").glob("*/*") if p.suffix != ".json"]
    return path


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(SIZE // 2)


def grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"x" * 1000)


def delete(path: Path) -> None:
    path.unlink()


@pytest.fixture
async def fs_client(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await start_vidproxy(make_config("fs"))
    return client


@pytest.mark.parametrize("change", [truncate, grow, delete], ids=["truncated", "grown", "deleted"])
@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", {}), ("GET", {"Range": "bytes=1000-"}), ("HEAD", {})],
    ids=["get", "range", "head"],
)
async def test_a_damaged_data_file_answers_object_damaged(
    fs_client: TestClient[Any, Any],
    tmp_path: Path,
    change: Callable[[Path], None],
    method: str,
    headers: dict[str, str],
) -> None:
    assert (await fs_client.put("/videos/a.mp4", data=random_bytes(SIZE, 60))).status == 201
    change(data_file(tmp_path / "data"))

    response = await fs_client.request(method, "/videos/a.mp4", headers=headers)

    assert response.status == 500
    if method == "GET":
        assert await response.json() == {
            "error": "object_damaged",
            "message": response_message(change),
        }


def response_message(change: Callable[[Path], None]) -> str:
    found = {
        truncate: f"{SIZE // 2} bytes on disk, {SIZE} recorded",
        grow: f"{SIZE + 1000} bytes on disk, {SIZE} recorded",
        delete: f"the data file is missing; {SIZE} bytes recorded",
    }[change]
    return f"the stored bytes of this video are damaged: {found}"


async def test_a_damaged_object_can_be_overwritten_and_deleted(
    fs_client: TestClient[Any, Any], tmp_path: Path
) -> None:
    assert (await fs_client.put("/videos/a.mp4", data=random_bytes(SIZE, 61))).status == 201
    truncate(data_file(tmp_path / "data"))
    new = random_bytes(SIZE, 62)

    assert (await fs_client.put("/videos/a.mp4", data=new)).status == 201
    assert await (await fs_client.get("/videos/a.mp4")).read() == new
    delete(data_file(tmp_path / "data"))
    assert (await fs_client.delete("/videos/a.mp4")).status == 204
    assert (await fs_client.get("/videos/a.mp4")).status == 404
