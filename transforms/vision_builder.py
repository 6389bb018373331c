"""Rows for records with images: :class:`VisionExampleBuilder` (an :class:`ExampleBuilder`).

Per batch of parsed records:

1. every image the batch references is read, decoded, validated and resized **once** (a thread
   pool: Pillow releases the GIL while decoding, resizing and compressing; an LRU cache keeps
   images shared by several records), see :mod:`transforms.images` and :mod:`transforms.vision`;
2. every ``<image>`` position in the conversation is replaced by the processor's expanded
   placeholder (exactly the number of tokens the processor produces for that image), the
   conversation is rendered with the chat template and the batch is tokenized in one call, so
   ``input_ids`` in the shard are final;
3. image spans are located in the ids (their token count must equal the images' counts, else
   ``image_count_mismatch``) and are never trained, whatever the loss mode;
4. truncation never cuts inside an image span: ``turns`` drops whole oldest exchanges with their
   images; ``right`` cuts before a span that would be split (dropping that image and the ones
   after it), ``left`` after it; ``drop`` rejects as ``too_long``.

Image columns added to the shard (see :func:`image_fields`): per distinct image of the row
``image_bytes`` (encoded resized image; ``image_pixels`` raw ``uint8 [H, W, 3]`` with
``store_pixels``) and ``image_sha256`` (sha256 of that payload); per image occurrence in token
order ``image_index`` (into the distinct list), ``image_hw`` (resized height, width),
``image_original_hw``, ``image_grid_thw`` (dynamic family), ``image_token_counts``,
``image_sources``; and ``num_images`` / ``num_image_tokens``.
"""
from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from transforms import errors
from transforms.config import TokenizeOptions
from transforms.control_tokens import ControlTokens
from transforms.errors import RecordRejected
from transforms.example_builder import ExampleBuilder, conversation_hash
from transforms.formats import IMAGE_TAG, Conversation, FormatOptions
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
from transforms.labels import labels_from_mask, mask_from_ranges, pad_row, span_token_ranges
from transforms.reading import RawRecord
from transforms.shard_format import record_id_of, row_sort_key
from transforms.vision import (
    DYNAMIC,
    VisionConfig,
    grid_thw,
    num_image_tokens,
    placeholder_text,
    prepare_pixels,
    with_token_ids,
)


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
        pa.field("image_pixels" if options.store_pixels else "image_bytes", pa.list_(pa.large_binary()), nullable=False),
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


@dataclass
class _VisionPending:
    raw: RawRecord
    conversation: Conversation
    rendered: Any
    messages: list
    images: list            # PreparedImage per occurrence
    labels: list            # source label per occurrence
    message_images: list    # per message: occurrence indices
    literal_control_tokens: int = 0


class VisionExampleBuilder(ExampleBuilder):
    """Builds rows (with image columns) from records with images; text-only records work too.

    Args:
        tokenizer, format_options, tokenize_options: as :class:`ExampleBuilder` (``images`` is
            switched on in the format options).
        vision: the processor family configuration (:func:`transforms.vision.load_vision_config`).
        image_options: :class:`ImageOptions`.
        open_file: ``path -> bytes`` for remote image paths (the job passes a Beam reader).
        image_threads: threads decoding/resizing/encoding images (default: CPUs, at most 8).
        cache_size / cache_bytes: prepared images (payload included) kept across batches, for
            images shared by several records: at most this many, and at most this many bytes.
    """

    def __init__(self, *, tokenizer, format_options: FormatOptions, tokenize_options: TokenizeOptions,
                 vision: VisionConfig, image_options: ImageOptions | None = None,
                 open_file: Callable[[str], bytes] | None = None, image_threads: int | None = None,
                 cache_size: int = 256, cache_bytes: int = 64 * 1024 * 1024):
        if not format_options.images:
            format_options = replace(format_options, images=True)
        super().__init__(tokenizer=tokenizer, format_options=format_options, tokenize_options=tokenize_options)
        # ``<image>`` in a vision record is the image position (the format's tag), never literal text
        self.control_tokens = ControlTokens([t for t in self.control_tokens.tokens if t != IMAGE_TAG])
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

    def extra_fields(self) -> tuple:
        return image_fields(self.vision, self.image_options)

    # -- images ----------------------------------------------------------------------------------
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
            payload=payload, sha256=hashlib.sha256(payload).hexdigest(), hw=(height, width),
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

    def _prefetch(self, parsed: Sequence[tuple[RawRecord, Conversation]]) -> None:
        """Prepare every image of the batch that is not cached, in parallel threads."""
        todo: dict = {}
        self._batch = {}
        for raw, conversation in parsed:
            for ref in conversation.images:
                try:
                    source = image_source(ref)
                    key = self.reader.key(source, raw.source)
                except Exception:  # noqa: BLE001 - reported per record in _prepare (inside its guard)
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

    def _start_batch(self, parsed) -> None:
        """Decode and resize the batch's distinct images before rendering (see ``_prefetch``)."""
        self._prefetch(parsed)

    def _end_batch(self) -> None:
        self._batch = {}

    # -- steps -----------------------------------------------------------------------------------
    def _prepare_rows(self, raw: RawRecord, conversation: Conversation) -> list[_VisionPending]:
        return [self._prepare(raw, conversation)]  # a vision record is one row

    def _prepare(self, raw: RawRecord, conversation: Conversation) -> _VisionPending:
        conversation, literal = self._guard_control_tokens(conversation)
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
        messages, message_images = self._expand(conversation, images)
        rendered = self._render(conversation, messages, conversation.trainable)
        return _VisionPending(raw=raw, conversation=conversation, rendered=rendered, messages=messages,
                              images=images, labels=labels, message_images=message_images,
                              literal_control_tokens=literal)

    def _expand(self, conversation: Conversation, images: Sequence[PreparedImage]):
        """Messages with every ``<image>`` replaced by its expanded placeholder; image indices per message."""
        messages, per_message = [], []
        k = 0
        for message in conversation.messages:
            content = message.get("content") or ""
            count = content.count(IMAGE_TAG)
            if not count:
                messages.append(message)
                per_message.append([])
                continue
            pieces = content.split(IMAGE_TAG)
            out = [pieces[0]]
            for j in range(count):
                out.append(placeholder_text(self.vision, images[k + j].num_tokens))
                out.append(pieces[j + 1])
            messages.append({**message, "content": "".join(out)})
            per_message.append(list(range(k, k + count)))
            k += count
        if k != len(images):  # formats.py guarantees this; keep the invariant explicit
            raise RecordRejected(errors.IMAGE_COUNT_MISMATCH, f"{k} image positions for {len(images)} images")
        return messages, per_message

    def _image_spans(self, input_ids: np.ndarray, counts: Sequence[int]) -> list[tuple[int, int]]:
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

    def _analyse(self, rendered, encoding, counts):
        """``(input_ids, trained mask without image spans, assistant-turn token ranges, image spans)``."""
        input_ids = np.asarray(encoding.ids, dtype=np.int32)
        mask = mask_from_ranges(len(input_ids), span_token_ranges(encoding, rendered.trained_spans))
        turn_ranges = span_token_ranges(encoding, rendered.turn_spans)
        spans = self._image_spans(input_ids, counts)
        for start, end in spans:
            mask[start:end] = False
        return input_ids, mask, turn_ranges, spans

    def _drop_oldest_turns(self, item: _VisionPending, state):
        """Drop whole exchanges oldest first (keeping leading system messages) until it fits;
        their images go with them."""
        messages = item.messages
        trainable = list(item.conversation.trainable)
        head = 0
        while head < len(messages) and messages[head].get("role") == "system":
            head += 1
        starts = [i for i in range(head, len(messages)) if messages[i].get("role") == "user"]
        for cut in starts[1:]:
            kept_idx = list(range(head)) + list(range(cut, len(messages)))
            kept_images = [k for i in kept_idx for k in item.message_images[i]]
            candidate = self._render(item.conversation, [messages[i] for i in kept_idx],
                                     [trainable[i] for i in kept_idx])
            encoding = self._encode([candidate.text])[0]
            ids, msk, ranges, spans = self._analyse(candidate, encoding, [item.images[k].num_tokens for k in kept_images])
            if not msk.any():
                break  # dropping more would leave nothing to train
            state = (ids, msk, ranges, spans, kept_images, len(kept_idx))
            if len(ids) <= self.options.max_length:
                break
        return state

    @staticmethod
    def _window(n: int, spans, kept, *, max_length: int, side: str):
        """The kept token window ``[lo, hi)`` of at most ``max_length`` tokens that splits no image
        span, and the images inside it."""
        if side == "right":
            lo, hi = 0, max_length
            for start, end in spans:
                if start < hi < end:
                    hi = start
        else:
            lo, hi = n - max_length, n
            for start, end in spans:
                if start < lo < end:
                    lo = end
        inside = [(s, e, k) for (s, e), k in zip(spans, kept) if s >= lo and e <= hi]
        return (lo, hi), [(s - lo, e - lo) for s, e, _ in inside], [k for *_, k in inside]

    def _finish(self, item: _VisionPending, encoding) -> dict[str, Any]:
        options = self.options
        counts = [image.num_tokens for image in item.images]
        input_ids, mask, turn_ranges, spans = self._analyse(item.rendered, encoding, counts)
        full_length = len(input_ids)
        if not mask.any():
            raise RecordRejected(errors.NO_LOSS_TOKENS, "no token of this record is trained under --loss "
                                 f"{options.loss} (e.g. no trainable assistant turn)")
        kept = list(range(len(item.images)))
        num_messages = len(item.messages)
        window = (0, full_length)
        if options.max_length is not None and full_length > options.max_length:
            if options.truncation == "drop":
                raise RecordRejected(errors.TOO_LONG, f"{full_length} tokens > --max-length {options.max_length}")
            if options.truncation == "turns":
                input_ids, mask, turn_ranges, spans, kept, num_messages = self._drop_oldest_turns(
                    item, (input_ids, mask, turn_ranges, spans, kept, num_messages))
            n = len(input_ids)
            window = (0, n)
            if n > options.max_length:
                side = "left" if options.truncation == "left" else "right"
                window, spans, kept = self._window(n, spans, kept, max_length=options.max_length, side=side)
            if not mask[window[0]:window[1]].any():
                raise RecordRejected(
                    errors.NO_LOSS_TOKENS,
                    f"truncation to {options.max_length} tokens ({options.truncation}) removed every trained token",
                )
        lo, hi = window
        trained_turns = sum(1 for first, last in turn_ranges if mask[max(first, lo):min(last, hi)].any())
        input_ids, mask = input_ids[lo:hi], mask[lo:hi]
        labels = labels_from_mask(input_ids, mask)
        length = len(input_ids)
        num_loss = int(mask.sum())
        conversation = item.conversation
        digest = conversation_hash(conversation)
        if item.images:
            digest = hashlib.sha256((digest + "".join(image.sha256 for image in item.images)).encode()).hexdigest()
        row = {
            "input_ids": input_ids,
            "labels": labels,
            "length": length,
            "num_loss_tokens": num_loss,
            "truncated": full_length > length,
            "source": item.raw.source,
            "index": item.raw.index,
            "record_id": record_id_of(item.raw.value),
            "format": conversation.format,
            "num_turns": num_messages,
            "num_trained_turns": trained_turns if options.loss != "all" else sum(
                1 for m in conversation.messages if m.get("role") == "assistant"),
            "prompt_tokens": length - num_loss,
            "truncated_tokens": full_length - length,
            "conversation_hash": digest,
            "turn": -1,
            "reasoning_tokens": 0,
            "literal_control_tokens": item.literal_control_tokens,
            "row_of_record": 0,
            "split_extra_tokens": 0,
            "sort_key": row_sort_key(item.raw.source, item.raw.index),
        }
        row.update(self._image_columns(item, kept))
        if options.pad_to == "max_length":
            row["input_ids"], row["labels"], row["attention_mask"] = pad_row(
                input_ids, labels, length=options.max_length, pad_token_id=self.pad_token_id
            )
        return row

    def _image_columns(self, item: _VisionPending, kept: Sequence[int]) -> dict[str, Any]:
        distinct: dict[str, int] = {}
        payloads, shas, index, hw, original, grids, counts, sources = [], [], [], [], [], [], [], []
        for k in kept:
            image = item.images[k]
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
            sources.append(item.labels[k])
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
