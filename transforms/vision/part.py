"""The image part of the row core: what a vision job (``--processor``) adds to a chat row.

:class:`ImagePart` plugs into :class:`transforms.tasks.chat.ChatTask`; it does not change how
text is rendered, labelled or truncated, it adds:

1. **image preparation**, per batch of parsed records: every image the batch references is read,
   decoded, validated and resized **once** (a thread pool: Pillow releases the GIL while decoding,
   resizing and compressing; an LRU cache keeps images shared by several records), see
   :mod:`transforms.images` and :mod:`transforms.vision.resize`;
2. **image expansion**: every ``<image>`` position in the conversation is replaced by the
   processor's expanded placeholder (exactly the number of tokens the processor produces for that
   image), so ``input_ids`` in the shard are final; a record with images is one row;
3. **image spans**: located in the ids (their token count must equal the images' counts, else
   ``image_count_mismatch``); they are never trained, whatever the loss mode, and truncation
   treats them as protected spans (:mod:`transforms.truncation`): it never cuts inside one;
4. **image columns** (see :func:`image_fields`): per distinct image of the row ``image_bytes``
   (encoded resized image; ``image_pixels`` raw ``uint8 [H, W, 3]`` with ``store_pixels``) and
   ``image_sha256`` (sha256 of that payload); per image occurrence in token order ``image_index``
   (into the distinct list), ``image_hw`` (resized height, width), ``image_original_hw``,
   ``image_grid_thw`` (dynamic family), ``image_token_counts``, ``image_sources``; and
   ``num_images`` / ``num_image_tokens``.
"""
from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats import IMAGE_TAG, Conversation
from transforms.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    ENCODINGS,
    ImageReader,
    ImageSource,
    decode_image,
    encode_image,
    image_source,
)
from transforms.reading import RawRecord
from transforms.shard_format import sha256_hex
from transforms.vision.config import DYNAMIC, VisionConfig
from transforms.vision.resize import prepare_pixels
from transforms.vision.tokens import grid_thw, num_image_tokens, placeholder_text, with_token_ids


@dataclass(frozen=True, kw_only=True)
class ImageOptions:
    """How the job reads and stores images.

    Attributes:
        image_root: folder relative image paths are resolved in (``None``: the record file's folder).
        max_image_pixels: decoded pixel limit (``image_too_large`` above; decompression bombs).
        max_image_bytes: encoded file size limit.
        store_pixels: store raw ``uint8`` pixels (``image_pixels``) instead of encoded bytes.
        encoding: ``webp`` (lossless WebP, pixel-exact, the default), ``png`` (pixel-exact) or
            ``jpeg`` (smaller, lossy).
    """

    image_root: str | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    store_pixels: bool = False
    encoding: str = "webp"

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"image encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.max_image_pixels < 1 or self.max_image_bytes < 1:
            raise ValueError("image pixel and byte limits must be positive")

    def to_json(self) -> dict[str, Any]:
        """What changes rows (the root is a path, like --input, and is left out of the fingerprint)."""
        return {"max_image_pixels": self.max_image_pixels, "max_image_bytes": self.max_image_bytes,
                "store_pixels": self.store_pixels, "encoding": "raw" if self.store_pixels else self.encoding}


def image_fields(vision: VisionConfig, options: ImageOptions) -> tuple[pa.Field, ...]:
    """The Arrow fields a vision job adds to the shard schema."""
    ints = pa.list_(pa.int32())
    fields = [
        pa.field("image_pixels" if options.store_pixels else "image_bytes", pa.list_(pa.large_binary()),
                 nullable=False),
        pa.field("image_sha256", pa.list_(pa.string()), nullable=False),
        pa.field("image_index", ints, nullable=False),
        pa.field("image_hw", ints, nullable=False),
        pa.field("image_original_hw", ints, nullable=False),
    ]
    if vision.family == DYNAMIC:
        fields.append(pa.field("image_grid_thw", ints, nullable=False))
    fields += [
        pa.field("image_token_counts", ints, nullable=False),
        pa.field("image_sources", pa.list_(pa.string()), nullable=False),
        pa.field("num_images", pa.int32(), nullable=False),
        pa.field("num_image_tokens", pa.int32(), nullable=False),
    ]
    return tuple(fields)


@dataclass(frozen=True)
class PreparedImage:
    """One image as the shard stores it: resized payload, its hash, sizes and token count."""

    payload: bytes
    sha256: str
    hw: tuple[int, int]
    original_hw: tuple[int, int]
    num_tokens: int
    grid: tuple[int, int, int] | None


@dataclass(frozen=True)
class RecordImages:
    """The images of one record, prepared, in the order their positions appear.

    Attributes:
        images: one :class:`PreparedImage` per occurrence.
        labels: the source label of each occurrence (``image_sources``).
        message_images: per message, the occurrence indices it holds.
    """

    images: tuple[PreparedImage, ...]
    labels: tuple[str, ...]
    message_images: tuple[tuple[int, ...], ...]

    def of_messages(self, kept_messages: Sequence[int] | None) -> list[int]:
        """Occurrence indices held by the kept messages (all occurrences for ``None``)."""
        if kept_messages is None:
            return list(range(len(self.images)))
        return [k for i in kept_messages for k in self.message_images[i]]


class ImagePart:
    """Images for chat rows: preparation and cache, placeholder expansion, image spans, image columns.

    Args:
        tokenizer: the job's tokenizer (the image tokens' ids are looked up in it).
        vision: the processor family configuration (:func:`transforms.vision.processors.load_vision_config`).
        image_options: :class:`ImageOptions`.
        open_file: ``path -> bytes`` for remote image paths (the job passes a Beam reader).
        image_threads: threads decoding/resizing/encoding images (default: CPUs, at most 8).
        cache_size / cache_bytes: prepared images (payload included) kept across batches, for
            images shared by several records: at most this many, and at most this many bytes.
    """

    #: the format tag that marks an image position; in a vision record it is never literal text
    position_tag = IMAGE_TAG

    def __init__(self, *, tokenizer, vision: VisionConfig, image_options: ImageOptions | None = None,
                 open_file: Callable[[str], bytes] | None = None, image_threads: int | None = None,
                 cache_size: int = 256, cache_bytes: int = 64 * 1024 * 1024):
        self.vision = with_token_ids(vision, tokenizer)
        self.image_options = image_options or ImageOptions()
        self.reader = ImageReader(image_root=self.image_options.image_root,
                                  max_bytes=self.image_options.max_image_bytes, open_file=open_file)
        self.image_threads = max(1, image_threads or min(8, os.cpu_count() or 1))
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._batch: dict = {}
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None
        state["_cache"] = collections.OrderedDict()
        state["_cached_bytes"] = 0
        state["_batch"] = {}
        return state

    def fields(self) -> tuple[pa.Field, ...]:
        """The Arrow fields this part adds to the shard schema."""
        return image_fields(self.vision, self.image_options)

    # -- preparation and cache --------------------------------------------------------------------
    def prepare_image(self, source: ImageSource, key) -> PreparedImage:
        """Read, decode, validate, resize and encode one image (raises :class:`RecordRejected`)."""
        options = self.image_options
        data = self.reader.read(source, key)
        decoded = decode_image(data, max_pixels=options.max_image_pixels, label=source.label)
        array = prepare_pixels(self.vision, decoded.array)
        height, width = array.shape[:2]
        payload = array.tobytes() if options.store_pixels else encode_image(array, options.encoding)
        grid = grid_thw(self.vision, height, width) if self.vision.family == DYNAMIC else None
        return PreparedImage(
            payload=payload, sha256=sha256_hex(payload), hw=(height, width),
            original_hw=decoded.original_hw, num_tokens=num_image_tokens(self.vision, height, width), grid=grid,
        )

    def _prepare_or_error(self, source: ImageSource, key):
        try:
            return self.prepare_image(source, key)
        except RecordRejected as exc:
            return exc.with_traceback(None)  # cached: keep no frames (and their pixel buffers) alive
        except Exception as exc:  # noqa: BLE001 - a broken image never crashes the job
            return RecordRejected(errors.BAD_IMAGE, f"{source.label}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _size(result) -> int:
        return len(result.payload) if isinstance(result, PreparedImage) else 256

    def _remember(self, key, result) -> None:
        if key in self._cache:
            self._cached_bytes -= self._size(self._cache.pop(key))
        if self._size(result) > self.cache_bytes:
            return
        self._cache[key] = result
        self._cached_bytes += self._size(result)
        while len(self._cache) > self.cache_size or self._cached_bytes > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= self._size(dropped)

    def _lookup(self, source: ImageSource, key):
        if key in self._batch:
            return self._batch[key]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = self._prepare_or_error(source, key)
        self._remember(key, result)
        return result

    def start_batch(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> None:
        """Prepare every image of the batch that is not cached, in parallel threads."""
        todo: dict = {}
        self._batch = {}
        for raw, conversation in parsed:
            for ref in conversation.images:
                try:
                    source = image_source(ref)
                    key = self.reader.key(source, raw.source)
                except Exception:  # noqa: BLE001 - reported per record in attach (inside its guard)
                    continue
                if key in self._cache:
                    self._batch[key] = self._cache[key]
                    self._cache.move_to_end(key)
                elif key not in todo:
                    todo[key] = source
        if not todo:
            return
        if self.image_threads > 1 and len(todo) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.image_threads, thread_name_prefix="chatshards-images")
            results = list(self._pool.map(lambda item: self._prepare_or_error(item[1], item[0]), todo.items()))
        else:
            results = [self._prepare_or_error(source, key) for key, source in todo.items()]
        for key, result in zip(todo, results):
            self._batch[key] = result
            self._remember(key, result)

    def end_batch(self) -> None:
        """Forget the batch's images (the cache keeps what it keeps)."""
        self._batch = {}

    # -- per record ---------------------------------------------------------------------------------
    def attach(self, raw: RawRecord, conversation: Conversation) -> tuple[list[Mapping], RecordImages]:
        """The record's images prepared, and its messages with every ``<image>`` replaced by the
        image's expanded placeholder. Raises :class:`RecordRejected` for an unusable image."""
        images: list[PreparedImage] = []
        labels: list[str] = []
        for i, ref in enumerate(conversation.images):
            try:
                source = image_source(ref)
                key = self.reader.key(source, raw.source)
            except RecordRejected as exc:
                raise RecordRejected(exc.reason, f"image {i}: {exc.detail}") from None
            result = self._lookup(source, key)
            if isinstance(result, RecordRejected):
                raise RecordRejected(result.reason, f"image {i}: {result.detail}")
            images.append(result)
            labels.append(source.label)
        messages, per_message = self._expand(conversation.messages, images)
        return messages, RecordImages(tuple(images), tuple(labels), per_message)

    def _expand(self, messages: Sequence[Mapping], images: Sequence[PreparedImage]):
        """Messages with every ``<image>`` replaced by its expanded placeholder; image indices per message."""
        expanded, per_message = [], []
        k = 0
        for message in messages:
            content = message.get("content") or ""
            count = content.count(IMAGE_TAG)
            if not count:
                expanded.append(message)
                per_message.append(())
                continue
            pieces = content.split(IMAGE_TAG)
            out = [pieces[0]]
            for j in range(count):
                out.append(placeholder_text(self.vision, images[k + j].num_tokens))
                out.append(pieces[j + 1])
            expanded.append({**message, "content": "".join(out)})
            per_message.append(tuple(range(k, k + count)))
            k += count
        if k != len(images):  # the formats guarantee this; keep the invariant explicit
            raise RecordRejected(errors.IMAGE_COUNT_MISMATCH, f"{k} image positions for {len(images)} images")
        return expanded, tuple(per_message)

    def spans(self, input_ids: np.ndarray, counts: Sequence[int]) -> list[tuple[int, int]]:
        """Token span ``[start, end)`` of every image (Qwen: including its start/end tokens)."""
        vision = self.vision
        positions = np.flatnonzero(input_ids == vision.image_token_id)
        expected = int(sum(counts))
        if len(positions) != expected:
            raise RecordRejected(
                errors.IMAGE_COUNT_MISMATCH,
                f"{len(positions)} {vision.image_token} tokens in the tokenized text, expected {expected} for "
                f"{len(counts)} image(s) (the text contains literal image tokens, or the chat template drops "
                "or repeats content)",
            )
        spans = []
        at = 0
        for n in counts:
            chunk = positions[at:at + n]
            at += n
            start, end = int(chunk[0]), int(chunk[-1]) + 1
            if end - start != n:
                raise RecordRejected(errors.IMAGE_COUNT_MISMATCH, f"image tokens of one image are not contiguous "
                                                                  f"at positions {start}..{end}")
            if vision.family == DYNAMIC:
                if start == 0 or input_ids[start - 1] != vision.vision_start_id or end >= len(input_ids) \
                        or input_ids[end] != vision.vision_end_id:
                    raise RecordRejected(errors.IMAGE_COUNT_MISMATCH, f"image at tokens {start}..{end} is not "
                                                                      f"wrapped in {vision.vision_start_token}/"
                                                                      f"{vision.vision_end_token}")
                start, end = start - 1, end + 1
            spans.append((start, end))
        return spans

    @staticmethod
    def digest(conversation_digest: str, images: RecordImages) -> str:
        """The row's ``conversation_hash``: the conversation's, extended with its images' sha256."""
        if not images.images:
            return conversation_digest
        joined = conversation_digest + "".join(image.sha256 for image in images.images)
        return hashlib.sha256(joined.encode()).hexdigest()

    def columns(self, images: RecordImages, kept: Sequence[int]) -> dict[str, Any]:
        """The image columns of a row that keeps the occurrences ``kept`` (in token order)."""
        distinct: dict[str, int] = {}
        payloads, shas, index, hw, original, grids, counts, sources = [], [], [], [], [], [], [], []
        for k in kept:
            image = images.images[k]
            j = distinct.get(image.sha256)
            if j is None:
                j = distinct[image.sha256] = len(payloads)
                payloads.append(image.payload)
                shas.append(image.sha256)
            index.append(j)
            hw.extend(image.hw)
            original.extend(image.original_hw)
            if image.grid is not None:
                grids.extend(image.grid)
            counts.append(image.num_tokens)
            sources.append(images.labels[k])
        columns = {
            "image_pixels" if self.image_options.store_pixels else "image_bytes": payloads,
            "image_sha256": shas,
            "image_index": np.asarray(index, dtype=np.int32),
            "image_hw": np.asarray(hw, dtype=np.int32),
            "image_original_hw": np.asarray(original, dtype=np.int32),
            "image_token_counts": np.asarray(counts, dtype=np.int32),
            "image_sources": sources,
            "num_images": len(kept),
            "num_image_tokens": int(sum(counts)),
        }
        if self.vision.family == DYNAMIC:
            columns["image_grid_thw"] = np.asarray(grids, dtype=np.int32)
        return columns
