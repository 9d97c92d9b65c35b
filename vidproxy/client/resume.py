"""Where ``vidproxy upload FILE`` finds an upload it began in an earlier run.

One small JSON file per unfinished upload under ``$XDG_CACHE_HOME/vidproxy/
uploads/`` (default ``~/.cache``), named by a hash of what makes it the same
upload: the file's absolute path, size and modification time, the server's
URL, the key and the Content-Type asked for. It holds the tus upload's URL;
the server, asked with HEAD, says how much of it is stored. Written before
the first byte is sent, removed once the upload is complete: a file that was
changed since (other size or mtime) never resumes into the old upload.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "XDG_CACHE_HOME"
STATE_DIR = ("vidproxy", "uploads")


@dataclass(frozen=True)
class UploadIdentity:
    """What must be equal for a run to continue an earlier run's upload."""

    path: str  # absolute
    size: int
    mtime_ns: int
    server: str
    key: str
    content_type: str | None

    @classmethod
    def of(cls, name: str, server: str, key: str, content_type: str | None) -> UploadIdentity:
        info = os.stat(name)
        return cls(os.path.abspath(name), info.st_size, info.st_mtime_ns, server, key, content_type)

    def fingerprint(self) -> str:
        fields = [self.path, self.size, self.mtime_ns, self.server, self.key, self.content_type]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def state_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root).joinpath(*STATE_DIR)


def state_path(identity: UploadIdentity) -> Path:
    return state_dir() / f"{identity.fingerprint()}.json"


def load_upload_url(identity: UploadIdentity) -> str | None:
    """The upload URL saved for ``identity``; None without one (or an unreadable one)."""
    try:
        saved = json.loads(state_path(identity).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = saved.get("upload_url") if isinstance(saved, dict) else None
    return url if isinstance(url, str) and url else None


def save_upload_url(identity: UploadIdentity, url: str) -> None:
    """Atomically (write, then rename): a run killed meanwhile leaves the old state or the new."""
    path = state_path(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"upload_url": url, "file": identity.path, "size": identity.size, "key": identity.key}
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(partial, path)


def forget_upload(identity: UploadIdentity) -> None:
    state_path(identity).unlink(missing_ok=True)
