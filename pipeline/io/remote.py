"""Remote files for the job side: tokenizer folders and template files on any Beam filesystem.

Beam is imported only when a remote path is handled (through :mod:`pipeline.io.files` / :mod:`pipeline.io.globs`).

``transforms`` never touches remote storage (it must import without Beam); it takes these functions
as hooks. :func:`load_job_tokenizer` is what every job-side caller uses.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

from pipeline.io.files import is_local, open_binary, read_bytes
from pipeline.io.globs import match
from pipeline.io.trace import mark
from transforms.tokenizer_loading import TokenizerConfigError, load_tokenizer

_STAGED: dict[str, str] = {}
_STAGE_LOCK = threading.Lock()


def stage_folder(url: str) -> str:
    """Copy every file under the remote folder ``url`` to a local temporary folder; return that folder.

    Done once per process (the job's launcher and each worker process call it; threads share the
    copy) through Beam's ``FileSystems``, so any filesystem Beam knows works. The folder is removed
    when the process exits.

    Raises:
        TokenizerConfigError: nothing under ``url``, or a file cannot be read.
    """
    prefix = url.rstrip("/")
    with _STAGE_LOCK:
        if prefix in _STAGED and os.path.isdir(_STAGED[prefix]):
            return _STAGED[prefix]
        try:
            matched = match(prefix + "/**")
        except Exception as exc:  # listing failures are config errors
            raise TokenizerConfigError(f"cannot list tokenizer folder {url}: {exc}") from exc
        files = sorted(m.path for m in matched if m.path.startswith(prefix + "/") and not m.path.endswith("/"))
        if not files:
            raise TokenizerConfigError(
                f"tokenizer folder {url} holds no files (expected tokenizer.json, tokenizer_config.json, ...)"
            )
        local = os.path.realpath(tempfile.mkdtemp(prefix="chatshards-tokenizer-"))
        atexit.register(shutil.rmtree, local, True)
        for path in files:
            relative = path[len(prefix) + 1:]
            target = os.path.join(local, *relative.split("/"))
            if os.path.commonpath([local, os.path.realpath(target)]) != local:
                continue  # a name with ".." segments: never written outside the staging folder
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                with open_binary(path) as remote, open(target, "wb") as handle:
                    shutil.copyfileobj(remote, handle, 1 << 20)
            except Exception as exc:
                raise TokenizerConfigError(f"cannot copy {path}: {exc}") from exc
        _STAGED[prefix] = local
        return local


def read_text(path: str) -> str:
    """A text file from a local path or any Beam filesystem path."""
    if is_local(path):
        if not os.path.isfile(path):
            raise TokenizerConfigError(f"chat template file {path!r} does not exist")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise TokenizerConfigError(f"cannot read chat template file {path!r}: {exc.strerror or exc}") from exc
    else:
        try:
            data = read_bytes(path)
        except Exception as exc:  # unreadable remote file: a config error
            raise TokenizerConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerConfigError(f"chat template file {path!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} "
                                   f"at offset {exc.start}); save it as UTF-8") from None


def load_job_tokenizer(spec: str | None, **options):
    """``transforms.tokenizer_loading.load_tokenizer`` with remote folders and files enabled, and the
    prepared-tokenizer cache on (``prepared=True`` unless given): the job's processes load a prepared
    form with the ``tokenizers`` library alone once a folder has been seen (see
    :mod:`transforms.prepared_tokenizer`)."""
    options.setdefault("prepared", True)
    mark("tokenizer_load_start")
    tokenizer = load_tokenizer(spec, fetch_folder=stage_folder, read_text=read_text, **options)
    mark("tokenizer_loaded")
    return tokenizer


# Tokenizers already loaded in this process, by (spec, trust_remote_code): the launcher's (template
# probe), the builder's and the audit writer's are one object per process, so a worker (or the launcher,
# with the in-process runner) loads the vocabulary once instead of once per DoFn (0.5-1 s each).
# Users of a shared tokenizer may set its chat template (the builder sets the job's), nothing else.
_SHARED: dict[tuple, object] = {}


def shared_job_tokenizer(spec: str | None, *, trust_remote_code: bool = False, require_chat_template: bool = True):
    """:func:`load_job_tokenizer` once per process for each ``(spec, trust_remote_code)`` (and whether a chat
    template is required: tasks other than chat take tokenizers without one)."""
    key = (spec, trust_remote_code) if require_chat_template else (spec, trust_remote_code, False)
    if key not in _SHARED:
        _SHARED[key] = load_job_tokenizer(spec, trust_remote_code=trust_remote_code,
                                          require_chat_template=require_chat_template)
    return _SHARED[key]


def share_job_tokenizer(spec: str | None, tokenizer, *, trust_remote_code: bool = False,
                        require_chat_template: bool = True) -> None:
    """Make ``tokenizer`` (already loaded for ``spec``) what :func:`shared_job_tokenizer` returns here."""
    key = (spec, trust_remote_code) if require_chat_template else (spec, trust_remote_code, False)
    _SHARED[key] = tokenizer
