"""Generic file helpers of the job side: every read and write goes through Beam's ``FileSystems``, so local
paths and object stores (``gs://``) behave alike.

Contracts:

* :func:`is_local` is the one rule for "is this path on this machine": a path without a ``scheme://``
  prefix (:func:`transforms.tokenizer_loading.is_remote_path` is its negation);
* :func:`atomic_writer` / :func:`write_atomically`: a file appears under its final name complete or not at
  all (written under a unique temporary name in ``tmp_root``, then renamed over any earlier attempt's copy);
* :class:`DigestingSink` counts and hashes (sha256) what is written through it;
* folders are inspected by listing ``folder/**`` (object stores have no folders, see :func:`list_tree`).
"""
from __future__ import annotations

import hashlib
import uuid
from contextlib import contextmanager
from typing import Iterator

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.tokenizer_loading import is_remote_path

# The job's scratch folder under ``--output``: temporaries of atomic writes and the chunk stores
# (:mod:`pipeline.chunks`); deleted once the manifest is committed.
TMP_DIR = ".tmp"


def join(root: str, *parts: str) -> str:
    return FileSystems.join(root, *parts)


def tmp_root(output: str) -> str:
    """``<output>/.tmp``."""
    return join(output, TMP_DIR)


def is_local(path: str) -> bool:
    """A path on this machine (no ``scheme://`` prefix)."""
    return not is_remote_path(path)


def create(path: str):
    """A binary file opened for writing (no compression, whatever the name)."""
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def open_binary(path: str):
    """A binary file opened for reading (no decompression, whatever the name)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    """The whole content of ``path``."""
    with open_binary(path) as handle:
        return handle.read()


def read_range(handle, path: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of an open file; ``IOError`` when the file is shorter (never a short read)."""
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise IOError(f"chunk file {path} is truncated: wanted {length} bytes at {offset}, got {len(data)}")
    return data


class DigestingSink:
    """A write-only file object that forwards to ``handle`` while counting bytes (``tell()``, which
    Arrow's writers need) and hashing them (``digest``, sha256)."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def tmp_name(path: str, tmp_root: str) -> str:
    """A unique temporary name in ``tmp_root`` for a file that will be renamed to ``path``."""
    return join(tmp_root, f"{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}")


@contextmanager
def atomic_writer(path: str, *, tmp_root: str) -> Iterator[DigestingSink]:
    """Write ``path`` through a :class:`DigestingSink` on a temporary file, renamed to ``path`` when the
    block ends without an exception (its size and sha256 are then on the sink)."""
    tmp = tmp_name(path, tmp_root)
    with create(tmp) as handle:
        sink = DigestingSink(handle)
        yield sink
    publish_tmp(tmp, path)


def write_atomically(path: str, data: bytes, *, tmp_root: str) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_writer`."""
    with atomic_writer(path, tmp_root=tmp_root) as sink:
        sink.write(data)


def publish_tmp(tmp: str, path: str) -> None:
    """Rename a finished temporary file to its final name (replacing an earlier attempt's copy)."""
    ensure_dir(path.rsplit("/", 1)[0])
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def ensure_dir(folder: str) -> None:
    """Create a folder (local filesystems need it; object stores have no folders)."""
    if not FileSystems.exists(folder):
        try:
            FileSystems.mkdirs(folder)
        except Exception:  # created concurrently by another worker
            if not FileSystems.exists(folder):
                raise


def list_tree(folder: str) -> list[str]:
    """Every file under ``folder``, recursively, on any Beam filesystem.

    Object stores (``gs://``) have no folders: ``FileSystems.exists(folder)`` is false there even when
    objects live under ``folder/``, so folders are always inspected by listing ``folder/**``.
    """
    try:
        result = FileSystems.match([folder.rstrip("/") + "/**"])[0]
    except BeamIOError:
        return []
    return sorted(metadata.path for metadata in result.metadata_list)


def path_present(path: str) -> bool:
    """A file (or object) at ``path``, or anything under ``path/``."""
    return FileSystems.exists(path) or bool(list_tree(path))


def delete_tree(path: str) -> None:
    """Delete the file ``path`` or everything under ``path/`` (local folders and object prefixes alike)."""
    if FileSystems.exists(path):
        FileSystems.delete([path])  # a file, an object, or a local folder (removed recursively)
    leftovers = list_tree(path)  # object stores: the objects under the prefix
    if leftovers:
        FileSystems.delete(leftovers)
