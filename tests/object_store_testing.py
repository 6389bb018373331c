"""``fakegcs://bucket/key``: a Beam filesystem with Cloud Storage's semantics, for tests (shared by
test_dataflow_remote.py and test_reliability_object_store.py; a helper module, so that the class is
defined, and registered with Beam, once: pytest's importlib mode would load a test module imported
by another test module twice, and Beam refuses two filesystems for one scheme).

No folders: ``exists()`` is false for a prefix; an object appears when its writer is closed; rename
is copy + delete. Objects live as files under ``FakeObjectStore.root`` (a temporary folder the tests
set).
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

from apache_beam.io.filesystem import (
    BeamIOError,
    CompressedFile,
    CompressionTypes,
    FileMetadata,
    FileSystem,
)

SCHEME = "fakegcs"
PREFIX = SCHEME + "://"


class _ObjectWriter(io.BytesIO):
    """Buffers an object; publishes it atomically on close (like a GCS upload)."""

    def __init__(self, local: str):
        super().__init__()
        self._local = local

    def close(self):
        if not self.closed:
            os.makedirs(os.path.dirname(self._local), exist_ok=True)
            tmp = f"{self._local}.upload-{os.getpid()}-{id(self)}"
            with open(tmp, "wb") as handle:
                handle.write(self.getvalue())
            os.replace(tmp, self._local)
        super().close()


class FakeObjectStore(FileSystem):
    root: str | None = None  # set by the ``store`` fixture
    opened: list[str] = []

    @classmethod
    def scheme(cls):
        return SCHEME

    def _local(self, path: str) -> str:
        assert path.startswith(PREFIX) and self.root, path
        return os.path.join(self.root, *path[len(PREFIX):].split("/"))

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # object stores have no folders

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                local = os.path.join(dirpath, name)
                if ".upload-" in name:
                    continue
                url = PREFIX + os.path.relpath(local, self.root).replace(os.sep, "/")
                if url.startswith(dir_or_prefix):
                    yield FileMetadata(url, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        writer = _ObjectWriter(self._local(path))
        return writer if compression_type == CompressionTypes.UNCOMPRESSED else CompressedFile(writer, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        local = self._local(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"no object {path}")
        type(self).opened.append(path)
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = io.open(local, "rb")
        return raw if compression_type == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type)

    def copy(self, source_file_names, destination_file_names):
        errors = {}
        for source, destination in zip(source_file_names, destination_file_names):
            if not self.exists(source):
                errors[(source, destination)] = FileNotFoundError(source)
                continue
            os.makedirs(os.path.dirname(self._local(destination)), exist_ok=True)
            shutil.copyfile(self._local(source), self._local(destination))
        if errors:
            raise BeamIOError("Copy operation failed", errors)

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path):
        return os.path.isfile(self._local(path))  # a "folder" prefix never exists

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return hashlib.md5(Path(self._local(path)).read_bytes()).hexdigest()

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:  # GCS: "prefix/" deletes everything under it; otherwise exact matches only
            targets = [m.path for m in self.match([path + "**" if path.endswith("/") else path])[0].metadata_list]
            for target in targets:
                os.remove(self._local(target))

    def report_lineage(self, path, level=None):
        pass


def upload(root: Path, url: str, data: bytes):
    local = root / url[len(PREFIX):]
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)


def objects(root: Path, url: str) -> dict[str, str]:
    """``relative key -> sha256`` of every object under ``url``."""
    base = root / url[len(PREFIX):]
    return {str(p.relative_to(base)).replace(os.sep, "/"): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def fresh_store(tmp_path: Path, monkeypatch):
    """Fixture body: an empty ``fakegcs://`` store under ``tmp_path/objects`` (yields its root); afterwards,
    checks that nothing wrote a ``fakegcs://`` path through the local filesystem."""
    root = tmp_path / "objects"
    root.mkdir()
    monkeypatch.setattr(FakeObjectStore, "root", str(root))
    monkeypatch.setattr(FakeObjectStore, "opened", [])
    monkeypatch.chdir(tmp_path)  # a stray local open("fakegcs://...") would create ./fakegcs:/...
    yield root
    assert not (tmp_path / "fakegcs:").exists(), "something wrote a fakegcs:// path with the local filesystem"
