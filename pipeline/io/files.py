"""Generic file helpers of the job side, for local paths and object stores (``gs://``) alike.

Local paths (no ``scheme://`` prefix, :func:`is_local`) are handled with ``os``, ``shutil`` and ``open``,
without importing Beam; remote paths go through Beam's ``FileSystems``, imported only when a remote
path is handled. Each helper does on a local path what Beam's ``LocalFileSystem`` does, except that a
path is always taken literally (Beam's ``delete`` matches its argument as a glob: ``*``, ``?`` and
``[`` would select other files).

Contracts:

* :func:`is_local` is the one rule for "is this path on this machine": a path without a ``scheme://``
  prefix (:func:`transforms.tokenizer_loading.is_remote_path` is its negation);
* :func:`join` is ``os.path.join`` locally; :func:`create` makes the missing parent folders;
  :func:`delete` removes files and whole folders; failures of :func:`delete`, :func:`rename` and
  listings raise :class:`StorageError` locally and Beam's ``BeamIOError`` remotely
  (:func:`storage_errors` names both), each with ``exception_details`` (``{path: cause}``);
* :func:`atomic_writer` / :func:`write_atomically`: a file appears under its final name complete or not at
  all (written under a unique temporary name in ``tmp_root``, then renamed over any earlier attempt's copy);
* :class:`DigestingSink` counts and hashes (sha256) what is written through it;
* folders are inspected by listing everything under them (object stores have no folders, see
  :func:`list_tree`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from typing import Iterator, Sequence

from pipeline.io.globs import StorageError, walk_files
from transforms.tokenizer_loading import is_remote_path

# The job's scratch folder under ``--output``: temporaries of atomic writes and the chunk stores
# (:mod:`pipeline.io.chunks`); deleted once the manifest is committed.
TMP_DIR = ".tmp"


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exception types a storage failure of these helpers can have: :class:`StorageError`, and Beam's
    ``BeamIOError`` once Beam is loaded (it cannot be raised before)."""
    beam_filesystem = sys.modules.get("apache_beam.io.filesystem")
    return (StorageError,) + ((beam_filesystem.BeamIOError,) if beam_filesystem is not None else ())


def _beam_filesystems():
    """Beam's ``FileSystems`` (imported on first use: remote paths only)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _uncompressed() -> str:
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def join(root: str, *parts: str) -> str:
    """``root/part/...`` (``os.path.join`` for local paths; the filesystem's own join for remote ones)."""
    if is_local(root):
        return os.path.join(root, *parts)
    return _beam_filesystems().join(root, *parts)


def tmp_root(output: str) -> str:
    """``<output>/.tmp``."""
    return join(output, TMP_DIR)


def is_local(path: str) -> bool:
    """A path on this machine (no ``scheme://`` prefix)."""
    return not is_remote_path(path)


def create(path: str):
    """A binary file opened for writing (no compression, whatever the name); missing parent folders of a
    local path are created."""
    if is_local(path):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return open(path, "wb")
    return _beam_filesystems().create(path, compression_type=_uncompressed())


def open_binary(path: str):
    """A binary file opened for reading (no decompression, whatever the name)."""
    if is_local(path):
        return open(path, "rb")
    return _beam_filesystems().open(path, compression_type=_uncompressed())


def exists(path: str) -> bool:
    """A file or folder at ``path`` (``os.path.exists``); remotely, an object named exactly ``path``."""
    if is_local(path):
        return os.path.exists(path)
    return _beam_filesystems().exists(path)


def _delete_local(path: str) -> None:
    if not os.path.lexists(path):
        raise FileNotFoundError(f"No files found to delete under: {path}")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)  # a file, or a symbolic link itself (never what it points to)


def delete(paths: Sequence[str]) -> None:
    """Delete files, and local folders with everything in them. Every path is tried; then a failure (a
    path that does not exist included) raises :class:`StorageError` / ``BeamIOError`` naming each."""
    if isinstance(paths, str):
        raise TypeError(f"delete takes a list of paths, not the string {paths!r}")
    failures: dict = {}
    for path in paths:
        if is_local(path):
            try:
                _delete_local(path)
            except Exception as exc:
                failures[path] = exc
    remote = [path for path in paths if not is_local(path)]
    if remote:
        _beam_filesystems().delete(remote)
    if failures:
        raise StorageError("Delete operation failed", failures)


def rename(source: str, destination: str) -> None:
    """Rename one file (locally ``os.rename``: an existing destination file is replaced)."""
    if is_local(source):
        try:
            os.rename(source, destination)
        except OSError as exc:
            raise StorageError("Rename operation failed", {(source, destination): exc}) from exc
        return
    _beam_filesystems().rename([source], [destination])


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
    """Rename a finished temporary file to its final name (replacing an earlier attempt's copy: locally in
    one ``os.rename``, so the name never lacks a complete file; remotely, delete then rename, as Beam can)."""
    ensure_dir(path.rsplit("/", 1)[0])
    if is_local(path):
        if os.path.isdir(path) and not os.path.islink(path):
            delete([path])  # a folder in the way; a file is replaced by the rename itself, atomically
    elif exists(path):
        delete([path])
    rename(tmp, path)


def ensure_dir(folder: str) -> None:
    """Create a folder and its parents (local filesystems need it; object stores have no folders)."""
    if is_local(folder):
        if not os.path.exists(folder):
            try:
                os.makedirs(folder)
            except OSError:  # created concurrently by another worker
                if not os.path.exists(folder):
                    raise
        return
    filesystems = _beam_filesystems()
    if not filesystems.exists(folder):
        try:
            filesystems.mkdirs(folder)
        except Exception:  # created concurrently by another worker
            if not filesystems.exists(folder):
                raise


def list_tree(folder: str) -> list[str]:
    """Every file under ``folder``, recursively, sorted; ``[]`` when it cannot be listed.

    Locally: the files of ``os.walk(folder)`` (symbolic links to folders not followed, broken links
    left out), what Beam's ``FileSystems.match([folder + "/**"])`` lists. Object stores (``gs://``) have
    no folders: ``exists(folder)`` is false there even when objects live under ``folder/``, so there
    ``folder/**`` is matched.
    """
    root = folder.rstrip("/")
    if is_local(folder):
        try:
            return sorted(info.path for info in walk_files(os.path.dirname(root + "/")))
        except StorageError:
            return []
    from apache_beam.io.filesystem import BeamIOError

    try:
        result = _beam_filesystems().match([root + "/**"])[0]
    except BeamIOError:
        return []
    return sorted(metadata.path for metadata in result.metadata_list)


def path_present(path: str) -> bool:
    """A file (or object) at ``path``, or anything under ``path/``."""
    return exists(path) or bool(list_tree(path))


def delete_tree(path: str) -> None:
    """Delete the file ``path`` or everything under ``path/`` (local folders and object prefixes alike)."""
    if exists(path):
        delete([path])  # a file, an object, or a local folder (removed recursively)
    leftovers = list_tree(path)  # object stores: the objects under the prefix
    if leftovers:
        delete(leftovers)
