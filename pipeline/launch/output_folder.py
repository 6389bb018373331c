"""Owning an ``--output`` folder: what the job may delete, when inputs overlap it, one run at a time.

How the job knows a folder is its own: the first thing a run writes into ``--output`` (before any
data) is the marker file ``.chatshards-output``; a folder without the marker is still recognised by
a chatshards ``manifest.json`` (``"format": "chatshards"``; datasets written before the
marker existed). ``--overwrite`` then deletes only what the tool writes there: ``manifest.json``
(first, so the folder stops being a dataset at once), the dataset card ``README.md``,
``data/shard-NNNNN-of-NNNNN.arrow``, ``rejected/rejected-NNNNN-of-NNNNN.jsonl``, ``audit/stats.json`` and
``audit/report.html``, and ``.tmp/``; never a file an ``--input`` pattern matches. A folder that holds
``data/`` (or ``rejected/`` ...) but neither marker nor chatshards manifest, or whose ``data/`` /
``rejected/`` hold files of other names, is refused even with ``--overwrite``; so is a ``README.md`` that
is not the tool's card (a run would replace it).

Files derived from the shards by a library are the one exception: Hugging Face ``datasets`` writes
``cache-*.arrow`` (and, while writing, ``tmpXXXXXXXX``) beside the files it reads when a dataset loaded
with ``Dataset.from_file`` is mapped, shuffled or filtered. Such files in ``data/`` keep the dataset
readable (the manifest and the card name the shards only) and ``--overwrite`` deletes them with them,
saying so on stderr.

An ``--output`` that overlaps the inputs is a configuration error: an input file inside the
folders the job writes, or an ``--input`` glob that would match a file the job writes
(``--input 'd/*' --output d`` matches ``d/manifest.json``).

One run at a time: :class:`OutputLock` holds ``<out>/.chatshards.lock`` (created with ``O_EXCL``,
holding pid, host and start time) while the job runs. A lock whose process is gone (same host, pid
not alive) is stale and taken over. This works on local and network disks (NFS honours
``O_EXCL``); object stores (``gs://``) have no atomic create-if-absent through Beam's filesystems,
so there the lock is not taken (see README, "Reliability"): the commit check
(:func:`pipeline.steps.manifest.check_folder_holds_exactly`) still refuses to write a manifest over a folder whose
``data/`` or ``rejected/`` hold files the run did not write.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from typing import Iterable, Sequence

from pipeline.io.chunks import CHUNK_SUFFIX, STORES
from pipeline.io.files import (
    TMP_DIR,
    create,
    delete,
    delete_tree,
    exists,
    is_local,
    join,
    list_tree,
    open_binary,
    path_present,
)
from pipeline.io.globs import glob_regex
from pipeline.launch.cli import ConfigError
from transforms import shard_format as sf
from transforms.dataset_card import CARD_NAME, is_chatshards_card

LOG = logging.getLogger("chatshards")
MARKER_NAME = ".chatshards-output"
LOCK_NAME = ".chatshards.lock"
AUDIT_DIR = "audit"
AUDIT_FILES = ("stats.json", "report.html")
# What a run writes, by folder: names matched by these are the tool's own.
_OWN_FILE = {
    sf.DATA_DIR: re.compile(r"shard-\d{5}-of-\d{5}\.arrow"),
    sf.REJECTED_DIR: re.compile(r"rejected-\d{5}-of-\d{5}\.jsonl"),
}
# Files a library writes beside the files it reads (datasets' cache-*.arrow): derived, deleted by --overwrite.
_DERIVED_FILE = sf.DERIVED_FILE
MARKER_TEXT = json.dumps({
    "written_by": "chatshards",
    "meaning": "this folder is the output of a chatshards job; --overwrite deletes manifest.json, README.md, "
               "data/shard-*.arrow, rejected/rejected-*.jsonl, audit/stats.json, audit/report.html and .tmp/ "
               "(and cache-*.arrow files a library wrote in data/)",
}, indent=1) + "\n"
# A lock file that exists but holds no readable owner yet is being written by its creator.
_UNREADABLE_LOCK_GRACE_S = 10.0


class OutputExists(ConfigError):
    """``--output`` holds a dataset (or a partial run) and ``--overwrite`` was not given."""


class OutputNotOurs(ConfigError):
    """``--output`` holds files this tool did not write; nothing is deleted."""


class OutputLocked(ConfigError):
    """Another run holds ``--output``."""


def _normal(path: str) -> str:
    return os.path.abspath(path) if is_local(path) else path.rstrip("/")


def _relative(path: str, root: str) -> str:
    return path[len(root):].lstrip("/\\")


# ---------------------------------------------------------------------------------------------
# the output path itself, and its overlap with the inputs

def check_output_target(output: str) -> None:
    """``--output`` must be a folder (or not exist yet), not a file."""
    if is_local(output):
        if os.path.exists(output) and not os.path.isdir(output):
            raise ConfigError(f"--output {output!r} is a file, not a folder; choose a folder")
    elif exists(output):  # an object named exactly like the folder
        raise ConfigError(f"--output {output!r} is an object, not a folder (prefix); choose another name")


def _written_samples(out: str) -> list[str]:
    """Paths of the kinds a run writes under ``out`` (for matching input globs against)."""
    return [join(out, *parts) for parts in (
        (sf.MANIFEST_NAME,), (MARKER_NAME,), (LOCK_NAME,), (CARD_NAME,),
        (sf.DATA_DIR, "shard-00000-of-00001.arrow"), (sf.REJECTED_DIR, "rejected-00000-of-00001.jsonl"),
        (AUDIT_DIR, "stats.json"), (AUDIT_DIR, "report.html"),
        *((TMP_DIR, store, f"{store}-0{CHUNK_SUFFIX}") for store in STORES), (TMP_DIR, "manifest.json.0"),
    )]


def _written_by_the_job(path: str, out: str) -> bool:
    if path in (join(out, name) for name in (sf.MANIFEST_NAME, MARKER_NAME, LOCK_NAME, CARD_NAME)):
        return True
    return any(path.startswith(join(out, folder) + "/")
               for folder in (sf.DATA_DIR, sf.REJECTED_DIR, AUDIT_DIR, TMP_DIR))


def _pattern_regex(pattern: str) -> str:
    """The regular expression of a glob, as its filesystem's matcher builds it (Beam only for remote ones)."""
    if is_local(pattern):
        return glob_regex(pattern)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_filesystem(pattern).translate_pattern(pattern)


# Local paths are compared by what they name, however they are spelled: the real path (symbolic links and
# ``..`` resolved) and the (st_dev, st_ino) identity of the file or folder (bind mounts, hard links, case on
# case-insensitive filesystems), so an --output reached through a symbolic link is the same folder as its target.

def _identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what ``path`` names (symbolic links followed); ``None`` when it does not exist."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _spellings(path: str) -> set[str]:
    """The absolute and the real path of a local ``path``."""
    return {os.path.abspath(path), os.path.realpath(path)}


def _folders_written(out: str) -> set[tuple[int, int]]:
    """Identities of the folders under a local ``out`` where the job writes or deletes (those that exist)."""
    found = (_identity(os.path.join(out, folder)) for folder in (sf.DATA_DIR, sf.REJECTED_DIR, AUDIT_DIR, TMP_DIR))
    return {identity for identity in found if identity is not None}


def _files_written(out: str) -> set[tuple[int, int]]:
    """Identities of the files directly in a local ``out`` that the job writes or deletes (those that exist)."""
    found = (_identity(os.path.join(out, name)) for name in (sf.MANIFEST_NAME, MARKER_NAME, LOCK_NAME))
    return {identity for identity in found if identity is not None}


def _inside_written_local(out: str):
    """A test of local input paths: is the path, however either is spelled, a file the job writes in ``out``
    or under one of the folders it writes there (``data/``, ``rejected/``, ``audit/``, ``.tmp/``)?"""
    outs = _spellings(out)
    files, folders = _files_written(out), _folders_written(out)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        if any(_written_by_the_job(spelling, root) for spelling in (os.path.abspath(path), real) for root in outs):
            return True
        if files and _identity(path) in files:
            return True
        folder = os.path.dirname(real)
        while folders:
            if _identity(folder) in folders:
                return True
            parent = os.path.dirname(folder)
            if parent == folder:
                return False
            folder = parent
        return False

    return inside


def _resolved_pattern(pattern: str) -> str:
    """A local glob with its literal folder part (before the first component holding ``*``, ``?`` or ``[``)
    replaced by its real path."""
    full = os.path.abspath(pattern)
    parts = full.split(os.sep)
    literal = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    if literal == 0:
        return full
    head = os.sep.join(parts[:literal]) or os.sep
    return os.path.join(os.path.realpath(head), *parts[literal:])


def check_inputs_outside_output(output: str, patterns: Sequence[str], files: Iterable[str] | None) -> None:
    """Refuse (``ConfigError``) an ``--output`` that overlaps the inputs: an input file among the files
    the job writes or deletes in ``output``, or an ``--input`` glob that would match such a file. Local
    paths are compared however they are spelled (real paths, and file and folder identities)."""
    out = _normal(output)
    inside_local = _inside_written_local(out) if is_local(output) else None
    for path in files or ():
        if inside_local is not None and is_local(path):
            inside = inside_local(path)
        else:
            inside = _written_by_the_job(_normal(path), out)
        if inside:
            raise ConfigError(f"--input file {path!r} lies where the job writes its output in --output "
                              f"{output!r} (data/, rejected/, audit/, .tmp/, manifest.json, README.md); choose an "
                              "--output "
                              "outside the input folders")
    samples = _written_samples(out)
    if is_local(output):
        samples += _written_samples(os.path.realpath(out))
    for pattern in patterns:
        full = _normal(pattern)
        if pattern.endswith(("/", "\\")):
            full += "/*"
        if is_local(pattern) != is_local(output):
            continue
        regexes = [re.compile(_pattern_regex(full))]
        if is_local(pattern):
            regexes.append(re.compile(_pattern_regex(_resolved_pattern(full))))
        hit = next((sample for sample in samples for regex in regexes if regex.match(sample)), None)
        if hit is not None:
            raise ConfigError(f"--input {pattern!r} would also match {_relative(hit, out)!r}, which the job writes in "
                              f"--output {output!r}; choose an --output outside the input folders, or a narrower glob")


# ---------------------------------------------------------------------------------------------
# ownership and --overwrite

def _manifest_is_ours(output: str) -> bool:
    path = join(output, sf.MANIFEST_NAME)
    try:
        with open_binary(path) as handle:
            manifest = json.loads(handle.read(16 * 1024 * 1024).decode("utf-8"))
    except Exception:  # absent, unreadable or not JSON: not a chatshards manifest
        return False
    return isinstance(manifest, dict) and manifest.get("format") == sf.FORMAT_NAME


def has_marker(output: str) -> bool:
    return exists(join(output, MARKER_NAME))


def write_marker(output: str) -> None:
    """Mark ``output`` as this tool's folder (before the run writes anything else there)."""
    path = join(output, MARKER_NAME)
    if exists(path):
        return
    if is_local(output):
        os.makedirs(output, exist_ok=True)
    with create(path) as handle:
        handle.write(MARKER_TEXT.encode("utf-8"))


def _card_state(output: str) -> str | None:
    """``None`` (no ``README.md``), ``"ours"`` (the tool's dataset card) or ``"other"`` (someone else's file)."""
    path = join(output, CARD_NAME)
    if not exists(path):
        return None
    try:
        with open_binary(path) as handle:
            head = handle.read(64 * 1024)
    except Exception:  # unreadable: not provably ours
        return "other"
    return "ours" if is_chatshards_card(head) else "other"


def _own_files(output: str) -> tuple[list[str], list[str], list[str]]:
    """``(files --overwrite deletes, files a library derived from the shards in data/, files of other names in
    data/ and rejected/)``; ``.tmp`` apart. The card is among the first only when it is the tool's."""
    own, derived, foreign = [], [], []
    manifest = join(output, sf.MANIFEST_NAME)
    if exists(manifest):
        own.append(manifest)
    if _card_state(output) == "ours":
        own.append(join(output, CARD_NAME))
    for folder, pattern in _OWN_FILE.items():
        root = join(output, folder)
        for path in list_tree(root):
            name = _relative(path, root)
            if pattern.fullmatch(name):
                own.append(path)
            elif folder == sf.DATA_DIR and _DERIVED_FILE.fullmatch(name):
                derived.append(path)
            else:
                foreign.append(path)
    for name in AUDIT_FILES:
        path = join(output, AUDIT_DIR, name)
        if exists(path):
            own.append(path)
    return own, derived, foreign


def _input_among(doomed: Sequence[str], input_files: Iterable[str]) -> str | None:
    """The first of the paths ``doomed`` (to be deleted) that is an input file, however either is spelled
    (same path, same real path, or locally the same ``(st_dev, st_ino)``), else ``None``."""
    inputs = list(input_files)
    names = {_normal(path) for path in inputs}
    local = [path for path in inputs if is_local(path)]
    names.update(spelling for path in local for spelling in _spellings(path))
    identities = {identity for identity in map(_identity, local) if identity is not None}
    for path in doomed:
        if _normal(path) in names:
            return path
        if is_local(path) and (_spellings(path) & names or _identity(path) in identities):
            return path
    return None


def prepare_output(output: str, *, overwrite: bool, input_files: Iterable[str] = ()) -> None:
    """Make ``output`` ready for a run, or refuse (``ConfigError``); then mark it as this tool's.

    * nothing of a dataset there: the marker is written, nothing else is touched;
    * a dataset or partial run of this tool (marker or chatshards manifest): refused without
      ``overwrite``; with it, the tool's own files are deleted (manifest first), other files left;
    * ``data/``, ``rejected/``, ``audit/``, ``.tmp/`` or a ``manifest.json`` that this tool did not write,
      or files of other names in ``data/``/``rejected/``: refused, even with ``overwrite``;
    * a file to delete that is also an input: refused (never deletes an input).
    """
    if _card_state(output) == "other":
        raise OutputNotOurs(
            f"--output {output!r} holds a {CARD_NAME} that chatshards did not write; a run writes its dataset card "
            f"there. Nothing was deleted: move {CARD_NAME} away or choose another --output folder")
    names = [sf.MANIFEST_NAME, sf.DATA_DIR, sf.REJECTED_DIR, AUDIT_DIR, TMP_DIR, CARD_NAME]
    present = [name for name in names if path_present(join(output, name))]
    if present:
        ours = has_marker(output) or _manifest_is_ours(output)
        if not ours:
            raise OutputNotOurs(
                f"--output {output!r} holds {', '.join(present)} but was not written by chatshards (no {MARKER_NAME} "
                "marker, no chatshards manifest.json); nothing was deleted. Choose another --output folder")
        own, derived, foreign = _own_files(output)
        if foreign:
            raise OutputNotOurs(
                f"--output {output!r} holds {len(foreign)} file(s) chatshards did not write, e.g. {foreign[0]!r}; "
                "nothing was deleted. Move them away or choose another --output folder")
        if not overwrite:
            also = (f"; --overwrite also deletes the {len(derived)} cache file(s) a library wrote beside the shards "
                    f"(e.g. {_relative(derived[0], output)!r})" if derived else "")
            raise OutputExists(
                f"--output {output!r} already holds a dataset or a partial run ({', '.join(present)}); "
                f"pass --overwrite to replace it, or choose another folder{also}")
        clash = _input_among(own + derived + (list_tree(join(output, TMP_DIR)) if is_local(output) else []),
                             input_files)
        if clash is not None:
            raise ConfigError(f"--overwrite would delete {clash!r}, which is an --input file; nothing was deleted")
        if own:
            delete(own)  # the manifest is first in the list: the folder stops being a dataset
        if derived:
            LOG.warning("chatshards: --overwrite: deleting %d cache file(s) that a library (Hugging Face datasets: "
                        "cache-*.arrow) wrote beside the shards in %s, e.g. %s (derived from the old shards; train "
                        "with ShardDataset(...).to_hf_dataset() to keep the folder clean)", len(derived),
                        join(output, sf.DATA_DIR), _relative(derived[0], join(output, sf.DATA_DIR)))
            delete(derived)
        delete_tree(join(output, TMP_DIR))
    write_marker(output)


# ---------------------------------------------------------------------------------------------
# one run at a time

_HELD: dict[str, str] = {}  # lock path -> token, for the locks this process holds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """``<out>/.chatshards.lock`` while a run uses ``out`` (local filesystems; a no-op on object stores).

    ``acquire()`` raises :class:`OutputLocked` when a live run holds the folder; a lock left by a
    process that is gone (same host, pid not alive, or this very process when it does not hold it)
    is taken over. ``release()`` removes the lock only if it is still this run's.
    """

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(output, LOCK_NAME) if is_local(output) else None
        self.token: str | None = None

    def acquire(self) -> "OutputLock":
        if self.path is None:
            LOG.warning("chatshards: --output %s is not on a local filesystem: no lock is taken (one run per folder "
                        "is up to you; the commit still refuses a folder mixed with other files)", self.output)
            return self
        os.makedirs(self.output, exist_ok=True)
        for _ in range(3):
            token = uuid.uuid4().hex
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    raise OutputLocked(
                        f"--output {self.output!r} is in use by another chatshards run (pid {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('started')}); wait for it to finish, or delete "
                        f"{self.path} if that run is gone") from None
                self._break(holder)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, handle)
            self.token = token
            _HELD[self.path] = token
            return self
        raise OutputLocked(f"--output {self.output!r}: could not take the lock {self.path}")

    def _holder(self) -> dict | None:
        """The lock's owner; ``None`` when it is unreadable and old enough to be a crashed creator's."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                holder = json.load(handle)
            if isinstance(holder, dict):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        try:
            age = time.time() - os.path.getmtime(self.path)
        except OSError:
            return None
        if age >= _UNREADABLE_LOCK_GRACE_S:
            return None
        return {"pid": "?", "host": "?", "started": "just now", "unreadable": True}

    def _stale(self, holder: dict) -> bool:
        if holder.get("unreadable") or holder.get("host") != socket.gethostname():
            return False  # another machine's process cannot be checked from here
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return False
        if pid == os.getpid():
            return _HELD.get(self.path) != holder.get("token")  # left by an earlier run in this process
        return not _alive(pid)

    def _break(self, holder: dict | None) -> None:
        LOG.warning("chatshards: taking over the stale lock %s (%s)", self.path,
                    f"pid {holder.get('pid')} on {holder.get('host')} is gone" if holder else "unreadable")
        try:  # rename first: of two processes breaking the same stale lock, one wins
            moved = f"{self.path}.stale-{uuid.uuid4().hex}"
            os.rename(self.path, moved)
            os.unlink(moved)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.path is None or self.token is None:
            return
        try:
            with open(self.path, encoding="utf-8") as handle:
                still_ours = json.load(handle).get("token") == self.token
        except (OSError, ValueError):
            still_ours = False
        if still_ours:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        _HELD.pop(self.path, None)
        self.token = None


# ---------------------------------------------------------------------------------------------
# claiming --output for a run

def claim_output(output: str, *, inputs: Sequence[str], files: Iterable[str] | None, overwrite: bool) -> OutputLock:
    """Launch-time checks and claim of ``output``: a folder, not overlapping the ``inputs`` patterns or the
    matched ``files``, locked for this run (:class:`OutputLock`), then prepared (:func:`prepare_output`: with
    ``overwrite`` only what an earlier run of this tool wrote is deleted). Returns the held lock (release it
    when the run ends); raises ``ConfigError``."""
    check_output_target(output)
    check_inputs_outside_output(output, inputs, files)
    lock = OutputLock(output).acquire()
    try:
        prepare_output(output, overwrite=overwrite, input_files=files or ())
    except BaseException:
        lock.release()
        raise
    return lock


def abandon_run(output: str, *, input_files: Iterable[str] = ()) -> None:
    """After a run that did not finish (a failure, a signal): delete what it wrote under a local ``output``
    (shards, rejected files, audit files, ``.tmp``), then ``data/``, ``rejected/`` and ``audit/`` when empty, so
    the folder holds only the marker and the next run needs no ``--overwrite``. Never deletes an input (same
    file by device and inode, whatever the path's spelling), and nothing when a manifest is there (the run
    committed before it was stopped). Never raises: a clean-up failure is a warning."""
    if not is_local(output) or exists(join(output, sf.MANIFEST_NAME)):
        return
    try:
        inputs = {identity for identity in map(_identity, input_files) if identity is not None}
        own, _, _ = _own_files(output)
        delete([path for path in own if _identity(path) not in inputs])
        delete_tree(join(output, TMP_DIR))
        for name in (sf.DATA_DIR, sf.REJECTED_DIR, AUDIT_DIR):
            try:
                os.rmdir(join(output, name))
            except OSError:  # absent, or holds other files: left as it is
                pass
    except Exception as exc:  # noqa: BLE001 - the job's own failure is what the user must see
        LOG.warning("chatshards: could not remove the unfinished run's files in %s: %s", output, exc)
