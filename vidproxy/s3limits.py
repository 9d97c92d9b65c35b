"""S3's published multipart limits (AWS's "Amazon S3 multipart upload limits"):
facts about the protocol that configuration is checked against and part
sizes are planned within."""

from __future__ import annotations

from .units import GiB, MiB, TiB

MIN_PART_SIZE = 5 * MiB  # every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TiB
