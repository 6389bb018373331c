"""Vision: how many tokens an image becomes, how it is resized, how pixels are normalised, and the
image part of a row.

Package map: :mod:`~transforms.vision.config` (:class:`VisionConfig`), :mod:`~transforms.vision.processors`
(processor families: a ``transformers`` processor -> ``VisionConfig``, launch time),
:mod:`~transforms.vision.tokens` (token counts and placeholder text), :mod:`~transforms.vision.resize`
(job-side pixel geometry), :mod:`~transforms.vision.pixels` (runtime-side normalise/patchify) and
:mod:`~transforms.vision.part` (:class:`~transforms.vision.part.ImagePart`, images in rows).
Import from the modules; this package file holds only this map.

Two families (both read from a real ``transformers`` processor, see :mod:`transforms.vision.processors`):

``fixed`` (LLaVA style: ``LlavaProcessor`` + ``CLIPImageProcessor``/``LlavaImageProcessor``)
    Every image is (optionally padded to a square,) resized (shortest edge, or to a fixed
    height x width) and center-cropped; its placeholder is the image token (``<image>``) repeated
    ``(H // patch) * (W // patch) + num_additional_image_tokens - (1 if strategy == "default")``
    times, which is what ``LlavaProcessor`` writes.

``dynamic`` (Qwen2-VL / Qwen2.5-VL / Qwen3-VL style: ``Qwen2VLImageProcessor``)
    Every image is resized with ``smart_resize`` (both sides multiples of ``patch * merge``, pixel
    count within ``[min_pixels, max_pixels]``, aspect ratio kept, at most 200:1); its grid is
    ``(1, H / patch, W / patch)`` and its placeholder is
    ``<|vision_start|>`` + ``<|image_pad|>`` x ``grid.prod() // merge_size**2`` + ``<|vision_end|>``.

The job stores the *resized* image (uint8 RGB, what the processor's resize step produces; the
resize runs through Pillow with the processor's resampling filter exactly like the processor's
PIL backend). The runtime collator only rescales/normalises (and, for ``dynamic``, patchifies):
:func:`transforms.vision.pixels.pixel_values`. Normalisation goes through a 256-entry lookup table per channel computed
with the processor's own float arithmetic (``float32(float64(v) * rescale)``, then
``(x - mean) / std`` in float32), so the values are bit-identical to the processor's.

``transformers`` is imported only inside :func:`transforms.vision.processors.load_processor` (launch time).
"""
