"""A tokenizer folder prepared once, then loaded with the ``tokenizers`` library alone.

Loading a folder through ``transformers.AutoTokenizer`` costs seconds per process (importing
transformers, resolving the class, building the Rust tokenizer, setting up special tokens); the job
pays it in the launcher and again in every worker. :func:`prepare` takes a tokenizer that
``AutoTokenizer`` loaded and writes what the job uses of it to a cache folder: the Rust tokenizer
exactly as transformers left it (``backend.json``) and the special-token metadata (``meta.json``).
:func:`load_prepared` reads them back as a :class:`PreparedTokenizer` in a fraction of that time,
without importing transformers.

:class:`PreparedTokenizer` provides exactly what chatshards reads from a tokenizer, with the
semantics of transformers 5's ``TokenizersBackend``: ``chat_template``, ``backend_tokenizer``,
``name_or_path``, ``bos/eos/pad/unk/sep/cls/mask_token`` and their ``_id``, ``all_special_ids``,
``all_special_tokens``, ``added_tokens_decoder``, ``get_added_vocab()``, ``get_vocab()``,
``convert_ids_to_tokens``, ``convert_tokens_to_ids``, ``decode``, ``special_tokens_map`` (named
special tokens whose value is not None), ``len()``, ``is_fast``, ``model_max_length``, ``model_input_names``,
``padding_side``, ``truncation_side``, ``pad_token_type_id``; and ``encode(text)`` of one string
(vision jobs check their image tokens with it). It is not a general tokenizer: no
``__call__``, ``apply_chat_template`` or ``save_pretrained``.

Only tokenizers whose class uses transformers' own implementation of each of those members are
prepared (:func:`preparable`); anything else (remote code, a class that overrides ``decode``...) is
always loaded through transformers.

Integrity: ``meta.json`` (written last, the commit) records the sha256 of ``backend.json``'s bytes and a
checksum of its own content. :func:`load_prepared` checks both before it uses the entry; a damaged entry
(an edited or truncated ``backend.json``, an edited ``meta.json``, files from two different preparations)
is reported in one warning line and treated as absent, so the caller prepares it again. The manifest's
``vocab_hash``, read from ``meta.json``, therefore always describes the backend that was loaded with it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

# Bump when the files' layout or meaning changes (old cache entries are then simply not found).
# 2: model_input_names, padding/truncation side and pad_token_type_id (encoder heads);
# 3: meta.json records backend.json's sha256 and its own checksum.
PREPARED_FORMAT = 3
LOG = logging.getLogger("chatshards")
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
BACKEND_FILE = "backend.json"
META_FILE = "meta.json"
# The TokenizersBackend members a prepared tokenizer reproduces; a class overriding any is not prepared.
_REPRODUCED = ("_decode", "decode", "convert_ids_to_tokens", "convert_tokens_to_ids",
               "_convert_token_to_id_with_added_voc", "get_vocab", "__len__", "added_tokens_decoder",
               "get_added_vocab", "special_tokens_map", "all_special_tokens", "all_special_ids",
               "clean_up_tokenization", "backend_tokenizer")


class PreparedTokenizer:
    """What the job reads from a tokenizer, over a ``tokenizers.Tokenizer`` (see the module docstring)."""

    is_fast = True

    def __init__(self, backend, meta: dict[str, Any], *, name_or_path: str):
        self._tokenizer = backend
        self._named = {key: meta["named_special_tokens"].get(key) for key in NAMED_SPECIAL_TOKENS}
        self._extra_special_tokens = list(meta["extra_special_tokens"])
        self._cleanup_default = bool(meta["clean_up_tokenization_spaces"])
        self._cleanup_bpe = bool(meta["clean_up_bpe"])
        self.chat_template = meta["chat_template"]
        self.name_or_path = name_or_path
        self.source_class_name = meta["class"]
        self.model_max_length = meta.get("model_max_length")
        # what the encoder-head tasks read: whether the model takes token_type_ids, the padding and truncation
        # sides, and the type id of padding
        self.model_input_names = list(meta.get("model_input_names") or ["input_ids", "attention_mask"])
        self.padding_side = meta.get("padding_side") or "right"
        self.truncation_side = meta.get("truncation_side") or "right"
        self.pad_token_type_id = int(meta.get("pad_token_type_id") or 0)
        # the vocabulary's hash, computed once when the folder was prepared (entries prepared before it was
        # recorded have none: it is then computed from the vocabulary, as for any tokenizer)
        self.known_vocab_hash = meta.get("vocab_hash")

    # -- named special tokens: ``bos_token`` (str or None) and ``bos_token_id`` (looked up live) --

    def __getattr__(self, key: str):
        base = key[:-3] if key.endswith("_id") else key
        if base in NAMED_SPECIAL_TOKENS and "_named" in self.__dict__:
            value = self._named.get(base)
            if value is None:
                return None
            return self.convert_tokens_to_ids(value) if key != base else value
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    @property
    def backend_tokenizer(self):
        return self._tokenizer

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {key: value for key, value in self._named.items() if value is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        seen: set[str] = set()
        tokens = []
        for token in [v for v in self._named.values() if v is not None] + self._extra_special_tokens:
            if token not in seen:
                seen.add(token)
                tokens.append(token)
        return tokens

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def added_tokens_decoder(self) -> dict:
        return self._tokenizer.get_added_tokens_decoder()

    def get_added_vocab(self) -> dict[str, int]:
        return {token.content: index for index, token in sorted(self.added_tokens_decoder.items(), key=lambda i: i[0])}

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __bool__(self) -> bool:
        return True

    def _token_to_id(self, token: str):
        index = self._tokenizer.token_to_id(token)
        return self.unk_token_id if index is None else index

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids of one text, as a fast tokenizer's ``encode(text)`` (vision jobs read image-token ids)."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None):
        """``ids -> str`` (a list of id lists gives a list of strings), as transformers' fast tokenizers."""
        token_ids = token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in token_ids]
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        text = self._tokenizer.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        cleanup = self._cleanup_default if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        if cleanup and (self._cleanup_bpe or type(self._tokenizer.model).__name__ != "BPE"):
            return _clean_up_tokenization(text)  # transformers skips it for BPE models unless told otherwise
        return text

    def __repr__(self) -> str:
        return (f"PreparedTokenizer(name_or_path={self.name_or_path!r}, class={self.source_class_name}, "
                f"size={len(self)})")


def _clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (WordPiece-era space clean-up)."""
    return (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
            .replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s").replace(" 've", "'ve")
            .replace(" 're", "'re"))


def vocab_digest(vocab: dict[str, int]) -> str:
    """sha256 over ``token -> id`` lines sorted by id: identifies the id mapping (the manifest's ``vocab_hash``)."""
    digest = hashlib.sha256()
    for token, token_id in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{token_id}\t{token}\n".encode("utf-8"))
    return digest.hexdigest()


def preparable(tokenizer) -> bool:
    """Whether ``tokenizer`` (a transformers tokenizer) is fully described by its prepared form."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - another transformers layout: never prepared
        return False
    cls = type(tokenizer)
    if not isinstance(tokenizer, TokenizersBackend) or not cls.__module__.startswith("transformers."):
        return False
    if any(getattr(cls, name, None) is not getattr(TokenizersBackend, name, None) for name in _REPRODUCED):
        return False
    if list(getattr(tokenizer, "SPECIAL_TOKENS_ATTRIBUTES", ())) != list(NAMED_SPECIAL_TOKENS):
        return False  # model-specific named tokens (multimodal): not reproduced
    return isinstance(tokenizer.chat_template, (str, dict, type(None)))


def prepare(tokenizer, folder: str) -> None:
    """Write ``tokenizer``'s prepared form to ``folder`` (created; written atomically, file by file)."""
    named = {key: (None if getattr(tokenizer, key, None) is None else str(getattr(tokenizer, key)))
             for key in NAMED_SPECIAL_TOKENS}
    extra = [str(t) for t in tokenizer.all_special_tokens if t not in set(v for v in named.values() if v)]
    meta = {
        "format": PREPARED_FORMAT,
        "class": type(tokenizer).__name__,
        "named_special_tokens": named,
        "extra_special_tokens": extra,
        "clean_up_tokenization_spaces": bool(tokenizer.clean_up_tokenization_spaces),
        "clean_up_bpe": bool(getattr(tokenizer,
                                     "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
                                     False)),
        "chat_template": tokenizer.chat_template,
        "model_max_length": tokenizer.model_max_length if isinstance(tokenizer.model_max_length, int) else None,
        "model_input_names": list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])),
        "padding_side": getattr(tokenizer, "padding_side", "right"),
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
        "pad_token_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "vocab_hash": vocab_digest(tokenizer.get_vocab()),
    }
    backend = tokenizer.backend_tokenizer.to_str().encode("utf-8")
    meta["backend_sha256"] = hashlib.sha256(backend).hexdigest()
    meta["checksum"] = meta_checksum(meta)
    os.makedirs(folder, exist_ok=True)
    _write_atomically(os.path.join(folder, BACKEND_FILE), backend)
    _write_atomically(os.path.join(folder, META_FILE), json.dumps(meta, ensure_ascii=False).encode("utf-8"))  # last


def meta_checksum(meta: dict[str, Any]) -> str:
    """sha256 of ``meta`` without its ``checksum`` key (canonical JSON)."""
    body = {key: value for key, value in meta.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class DamagedEntry(ValueError):
    """A prepared-tokenizer cache entry whose files do not match their recorded checksums."""


def read_prepared(folder: str) -> tuple[bytes, dict[str, Any]] | None:
    """``(backend.json bytes, meta)`` of the entry in ``folder``, checked; ``None`` when there is no entry
    of this :data:`PREPARED_FORMAT`.

    Raises:
        DamagedEntry: the entry is unreadable or its files do not match their checksums.
    """
    meta_path = os.path.join(folder, META_FILE)
    try:
        with open(meta_path, "rb") as handle:
            meta = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DamagedEntry(f"{META_FILE} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != PREPARED_FORMAT:
        return None
    if meta.get("checksum") != meta_checksum(meta):
        raise DamagedEntry(f"{META_FILE} does not match its checksum")
    try:
        with open(os.path.join(folder, BACKEND_FILE), "rb") as handle:
            backend = handle.read()
    except OSError as exc:
        raise DamagedEntry(f"{BACKEND_FILE} is unreadable ({type(exc).__name__}: {exc})") from exc
    if hashlib.sha256(backend).hexdigest() != meta.get("backend_sha256"):
        raise DamagedEntry(f"{BACKEND_FILE} does not match the sha256 recorded in {META_FILE} (edited, truncated "
                           "or from another preparation)")
    return backend, meta


def load_prepared(folder: str, *, name_or_path: str) -> PreparedTokenizer | None:
    """The prepared tokenizer in ``folder``, or None when there is none, or when it is damaged (checked
    against its checksums, see the module docstring; said in one warning line): the caller then loads the
    tokenizer through transformers and prepares the entry again."""
    try:
        found = read_prepared(folder)
        if found is None:
            return None
        backend_bytes, meta = found
        from tokenizers import Tokenizer

        backend = Tokenizer.from_buffer(backend_bytes)
        return PreparedTokenizer(backend, meta, name_or_path=name_or_path)
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
        LOG.warning("chatshards: the prepared-tokenizer cache entry %s is damaged (%s); preparing it again",
                    folder, exc)
        return None


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
