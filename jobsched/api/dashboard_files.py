"""The dashboard's files (HTML, CSS, JavaScript modules, icon), served from the package.

Read on first use and kept in memory: a few tens of KiB that every page load needs.
Each carries a strong ETag, so a browser revalidates with one cheap 304.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: bytes
    etag: bytes


class DashboardFiles:
    """The files of `package`/`folder` by name; only those with a known type."""

    def __init__(self, package: str = "jobsched.api", folder: str = "dashboard") -> None:
        self._package = package
        self._folder = folder
        self._files: dict[str, StaticFile] | None = None

    def get(self, name: str) -> StaticFile | None:
        if self._files is None:
            self._files = self._read_all()
        return self._files.get(name)

    def _read_all(self) -> dict[str, StaticFile]:
        files = {}
        for entry in resources.files(self._package).joinpath(self._folder).iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in CONTENT_TYPES:
                body = entry.read_bytes()
                digest = hashlib.blake2b(body, digest_size=12).hexdigest()
                files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], f'"{digest}"'.encode())
        return files
