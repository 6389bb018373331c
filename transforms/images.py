"""Image references, loading, decoding and validation (Beam-free, no ``transformers``).

A record names an image in one of these ways (:func:`image_source`):

* a path, relative to the image root (``--image-root``, default: the folder of the record's file)
  or absolute (then it must still lie inside the root: use ``--image-root /`` to allow any path);
* a ``file://`` URL (treated as a path);
* a base64 data URI ``data:image/png;base64,....``;
* a mapping: the Hugging Face ``datasets`` Image feature ``{"bytes": ..., "path": ...}`` (bytes win;
  Parquet/Arrow readers turn raw bytes into data URIs), ``{"url": ...}`` or ``{"path": ...}``.

``http(s)://`` URLs are never fetched (the job must be reproducible offline): ``missing_image``.

Each image is decoded once and validated (:func:`decode_image`):

* the header is read first: more than ``max_pixels`` pixels -> ``image_too_large`` (no pixel is
  decoded, so a decompression bomb costs nothing); a file bigger than ``max_bytes`` likewise;
* unreadable, truncated or non-image bytes -> ``bad_image``;
* the EXIF orientation is applied (the pixels become what a viewer shows);
* every mode becomes 8-bit RGB: transparency (RGBA, LA, PA, P with a transparent colour) is
  composited onto white (what ``transformers``' ``convert_to_rgb`` does), CMYK/YCbCr/L/1/I;16
  are converted; multi-frame files use their first frame.

Paths that leave the image root (``../``, absolute paths elsewhere, symlinks pointing out) ->
``image_path_escape``; a path that does not exist -> ``missing_image``.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import posixpath
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from transforms import errors
from transforms.errors import RecordRejected
from transforms.shard_format import sha256_hex

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000     # decoded pixels; larger images are image_too_large
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024  # encoded file size
ENCODINGS = ("webp", "png", "jpeg")
_DATA_URI_PREFIX = "data:"


@dataclass(frozen=True)
class ImageSource:
    """Where an image comes from: ``kind`` is ``"path"`` or ``"data"``.

    ``value`` is the path text (``"path"``) or the encoded bytes (``"data"``); ``label`` is what
    audits and rejections show (the path, or ``data:<N bytes>``).
    """

    kind: str
    value: Any
    label: str


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _data_uri_bytes(uri: str) -> bytes:
    head, sep, payload = uri.partition(",")
    if not sep:
        raise RecordRejected(errors.BAD_IMAGE, f"malformed data URI {_short(uri, 40)!r} (no comma)")
    if not head.endswith(";base64"):
        raise RecordRejected(errors.BAD_IMAGE, "data URI is not base64-encoded (expected ';base64,')")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise RecordRejected(errors.BAD_IMAGE, f"data URI is not valid base64: {exc}") from None


def image_source(ref: Any) -> ImageSource:
    """Normalise one image reference from a record (see the module docstring).

    Raises:
        RecordRejected: ``missing_image`` for an empty reference or an ``http(s)`` URL,
            ``bad_image`` for a malformed data URI or an unsupported value type.
    """
    if isinstance(ref, dict):
        data = ref.get("bytes")
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
            label = f"bytes:{ref.get('path')}" if ref.get("path") else f"data:<{len(data)} bytes>"
            return ImageSource("data", bytes(data), label)
        if isinstance(data, str) and data:
            source = image_source(data)
            if ref.get("path") and source.kind == "data":
                return ImageSource("data", source.value, f"bytes:{ref['path']}")
            return source
        for key in ("path", "url", "image", "image_url", "value"):
            if ref.get(key):
                return image_source(ref[key])
        raise RecordRejected(errors.MISSING_IMAGE, f"image reference {_short(repr(ref))} names no path, URL or bytes")
    if isinstance(ref, (bytes, bytearray, memoryview)):
        if not len(ref):
            raise RecordRejected(errors.MISSING_IMAGE, "empty image bytes")
        return ImageSource("data", bytes(ref), f"data:<{len(ref)} bytes>")
    if not isinstance(ref, str):
        raise RecordRejected(errors.BAD_IMAGE, f"image reference must be a path, URL, data URI or "
                                               f"{{'bytes','path'}} object, got {type(ref).__name__}")
    text = ref.strip()
    if not text:
        raise RecordRejected(errors.MISSING_IMAGE, "empty image path")
    if "\x00" in text:  # no filesystem path can hold it (os functions raise ValueError)
        raise RecordRejected(errors.BAD_IMAGE, f"{_short(text.replace(chr(0), '<NUL>'))}: an image reference "
                                               "cannot contain a NUL character")
    if text.startswith(_DATA_URI_PREFIX):
        data = _data_uri_bytes(text)
        if not data:
            raise RecordRejected(errors.MISSING_IMAGE, "data URI holds no bytes")
        return ImageSource("data", data, f"data:<{len(data)} bytes>")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        raise RecordRejected(errors.MISSING_IMAGE, f"{_short(text)}: remote URLs are not fetched by the job; "
                                                   "download the images and give local paths")
    if lowered.startswith("file://"):
        text = text[len("file://"):]
    return ImageSource("path", text, text)


def _is_remote(path: str) -> bool:
    return "://" in path


def resolve_image_path(path: str, root: str) -> str:
    """The full path of ``path`` inside ``root``; raises ``image_path_escape`` when it leaves ``root``.

    Local roots are compared after resolving symlinks (``realpath``); remote roots (``gs://...``)
    after normalising ``..`` segments.
    """
    if _is_remote(root) or _is_remote(path):
        if _is_remote(path):
            full = path
        else:
            full = root.rstrip("/") + "/" + path.lstrip("/") if not path.startswith("/") else path
        scheme, _, rest = full.partition("://")
        normal = scheme + "://" + posixpath.normpath(rest)
        root_scheme, _, root_rest = root.partition("://")
        root_normal = root_scheme + "://" + posixpath.normpath(root_rest)
        if normal != root_normal and not normal.startswith(root_normal.rstrip("/") + "/"):
            raise RecordRejected(errors.IMAGE_PATH_ESCAPE, f"{_short(path)} resolves outside the image root {root}")
        return normal
    root_real = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root_real, path))
    if full != root_real and os.path.commonpath([root_real, full]) != root_real:
        raise RecordRejected(errors.IMAGE_PATH_ESCAPE, f"{_short(path)} resolves outside the image root {root}")
    return full


def read_local_file(path: str, max_bytes: int) -> bytes:
    """Read a local image file; ``missing_image`` / ``image_too_large`` / ``bad_image`` on failure."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise RecordRejected(errors.MISSING_IMAGE, f"{path} does not exist") from None
    except OSError as exc:
        raise RecordRejected(errors.MISSING_IMAGE, f"{path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise RecordRejected(errors.MISSING_IMAGE, f"{path} is a directory, not an image file")
    if size > max_bytes:
        raise RecordRejected(errors.IMAGE_TOO_LARGE, f"{path} is {size} bytes, more than the {max_bytes}-byte limit")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise RecordRejected(errors.BAD_IMAGE, f"{path}: cannot read: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class DecodedImage:
    """An RGB ``uint8`` image (``array`` is ``[H, W, 3]``, EXIF orientation applied) and its size
    before any resize (as displayed, i.e. after the orientation)."""

    array: np.ndarray
    original_hw: tuple[int, int]
    format: str | None


def _to_rgb(image):
    from PIL import Image

    mode = image.mode
    has_alpha = "A" in image.getbands() or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.uint16) >> 8
        return Image.fromarray(array.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        array = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, label: str = "image") -> DecodedImage:
    """Decode, validate, orient and convert encoded image bytes to RGB (see the module docstring).

    Raises:
        RecordRejected: ``image_too_large`` or ``bad_image``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RecordRejected(errors.IMAGE_TOO_LARGE, f"{label}: {exc}") from None
    except UnidentifiedImageError:
        raise RecordRejected(errors.BAD_IMAGE, f"{label}: not a readable image ({len(data)} bytes, "
                                               f"starts with {data[:8]!r})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image
        raise RecordRejected(errors.BAD_IMAGE, f"{label}: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise RecordRejected(errors.BAD_IMAGE, f"{label}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise RecordRejected(errors.IMAGE_TOO_LARGE, f"{label}: {width}x{height} = {width * height} pixels, "
                                                     f"more than the limit of {max_pixels}")
    fmt = image.format
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        array = np.asarray(image, dtype=np.uint8)
    except RecordRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated files raise OSError, others ValueError/SyntaxError
        raise RecordRejected(errors.BAD_IMAGE, f"{label}: cannot decode: {type(exc).__name__}: {exc}") from None
    if array.ndim != 3 or array.shape[2] != 3:
        raise RecordRejected(errors.BAD_IMAGE, f"{label}: decoded to an unexpected shape {array.shape}")
    return DecodedImage(array=array, original_hw=(int(array.shape[0]), int(array.shape[1])), format=fmt)


def encode_image(array: np.ndarray, encoding: str = "png") -> bytes:
    """Encode an RGB ``uint8 [H, W, 3]`` array.

    ``webp``: lossless WebP (pixel-exact; on photos about 20 % smaller than PNG and faster to
    decode), ``png`` (pixel-exact), ``jpeg`` (quality 95, 4:4:4: smallest, not pixel-exact).
    """
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(array), "RGB")
    buffer = io.BytesIO()
    if encoding == "webp":
        image.save(buffer, format="WEBP", lossless=True, method=0, exact=True)
    elif encoding == "png":
        image.save(buffer, format="PNG", compress_level=3)
    elif encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=95, subsampling=0)
    else:
        raise ValueError(f"unknown image encoding {encoding!r}; choose one of {ENCODINGS}")
    return buffer.getvalue()


def decode_stored(payload: bytes, hw: tuple[int, int] | None = None, *, raw: bool = False) -> np.ndarray:
    """Decode a stored shard image back to ``uint8 [H, W, 3]``.

    ``raw=True``: ``payload`` holds the pixels themselves (``--store-pixels``), shaped with ``hw``.
    """
    if raw:
        if hw is None:
            raise ValueError("raw pixel payloads need their (height, width)")
        return np.frombuffer(payload, dtype=np.uint8).reshape(int(hw[0]), int(hw[1]), 3)
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        image = image.convert("RGB") if image.mode != "RGB" else image
        return np.asarray(image, dtype=np.uint8)


class ImageReader:
    """Turns :class:`ImageSource` values into bytes, enforcing the root and the size limits.

    Args:
        image_root: folder relative paths are resolved against; ``None`` means "the folder of the
            record's file" (given per call as ``record_dir``).
        max_bytes: largest accepted encoded file.
        open_file: ``path -> bytes`` for remote paths (``gs://...``); the job passes one built on
            Beam's ``FileSystems``. Local paths are read directly.
    """

    def __init__(self, *, image_root: str | None = None, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                 open_file: Callable[[str], bytes] | None = None):
        self.image_root = image_root
        self.max_bytes = max_bytes
        self.open_file = open_file

    def root_for(self, record_source: str) -> str:
        if self.image_root:
            return self.image_root
        if _is_remote(record_source):
            return record_source.rsplit("/", 1)[0] if "/" in record_source.split("://", 1)[1] else record_source
        return os.path.dirname(os.path.abspath(record_source))

    def key(self, source: ImageSource, record_source: str) -> tuple[str, str]:
        """A cache key: the resolved path, or the sha256 of inline bytes (raises on escapes)."""
        if source.kind == "data":
            return ("data", sha256_hex(source.value))
        return ("path", resolve_image_path(source.value, self.root_for(record_source)))

    def read(self, source: ImageSource, key: tuple[str, str]) -> bytes:
        if source.kind == "data":
            if len(source.value) > self.max_bytes:
                raise RecordRejected(errors.IMAGE_TOO_LARGE, f"{source.label}: {len(source.value)} bytes, more "
                                                             f"than the {self.max_bytes}-byte limit")
            return source.value
        path = key[1]
        if _is_remote(path):
            if self.open_file is None:
                raise RecordRejected(errors.MISSING_IMAGE, f"{path}: no reader for remote paths")
            try:
                data = self.open_file(path)
            except FileNotFoundError:
                raise RecordRejected(errors.MISSING_IMAGE, f"{path} does not exist") from None
            except Exception as exc:  # noqa: BLE001 - remote filesystems raise their own errors
                raise RecordRejected(errors.MISSING_IMAGE, f"{path}: {type(exc).__name__}: {exc}") from None
            if len(data) > self.max_bytes:
                raise RecordRejected(errors.IMAGE_TOO_LARGE, f"{path} is {len(data)} bytes, more than the "
                                                             f"{self.max_bytes}-byte limit")
            return data
        return read_local_file(path, self.max_bytes)
