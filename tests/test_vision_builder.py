"""RowBuilder with an ImagePart, and the image loader without Beam: input shapes, rejections, image modes,
span-safe truncation, loss masking of image tokens, storage options."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_vision_fixtures import builder, image_token_positions, loaded, png_bytes, raw, trained_runs, write_image

from chatshards_testing import sample
from transforms import errors
from transforms.errors import RecordRejected
from transforms.formats import FormatOptions, to_conversation
from transforms.images import decode_image, decode_stored, image_source, resolve_image_path
from transforms.reading import iter_raw_records_from_path


def one(kind, value, source, **options):
    (result_kind, item), = builder(kind, **options).build_records([raw(value, str(source))])
    return result_kind, item


def qa(content, answer="A red square.", **extra):
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}], **extra}


@pytest.fixture()
def images_dir(tmp_path):
    write_image(tmp_path / "red.png", (40, 30), (220, 20, 20))
    write_image(tmp_path / "blue.jpg", (64, 48), (20, 20, 220), fmt="JPEG")
    write_image(tmp_path / "sub" / "green.png", (30, 60), (20, 200, 20))
    return tmp_path


# -- record shapes ---------------------------------------------------------------------------------

def test_input_shapes_put_images_at_their_position(images_dir):
    source = images_dir / "records.json"
    opts = FormatOptions(images=True)
    cases = [
        ({"image": "red.png", "conversations": [{"from": "human", "value": "Is it red?\n<image>"},
                                                {"from": "gpt", "value": "Yes"}]}, ["Is it red?\n<image>"]),
        ({"image": "red.png",
          "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red"}]},
         ["<image>\nColour?"]),  # no tag: before the first user text
        (qa([{"type": "text", "text": "A"}, {"type": "image", "image": "red.png"},
             {"type": "image_url", "image_url": {"url": "blue.jpg"}}, {"type": "image_url", "value": "sub/green.png"}]),
         ["A<image><image><image>"]),
        (qa([{"type": "image"}, {"type": "text", "text": "What?"}], images=["red.png"]), ["<image>What?"]),  # TRL style
        ({"image": "red.png", "question": "Colour?", "answer": "Red"}, ["<image>\nColour?"]),  # vqa (auto)
        ({"input": "What is shown?", "output": "A logo.", "image": "red.png"},
         ["<image>\nWhat is shown?"]),  # torchtune
    ]
    for value, user_texts in cases:
        conversation = to_conversation(value, opts)
        assert [m["content"] for m in conversation.messages if m["role"] == "user"] == user_texts
        kind, row = one("qwen", value, source)
        assert kind == "row", row
        assert row["num_images"] == conversation.messages[0]["content"].count("<image>") == len(conversation.images)
    # several images in several turns, LLaMA-Factory style
    value = {"messages": [{"role": "user", "content": "<image>one"}, {"role": "assistant", "content": "a"},
                          {"role": "user", "content": "two<image><image>"}, {"role": "assistant", "content": "b"}],
             "images": ["red.png", "blue.jpg", "red.png"]}
    kind, row = one("llava", value, source)
    assert kind == "row", row
    assert row["image_index"].tolist() == [0, 1, 0] and len(row["image_bytes"]) == 2  # stored once
    assert row["image_sources"] == ["red.png", "blue.jpg", "red.png"]
    assert row["num_image_tokens"] == 3 * 256 == len(image_token_positions(row, loaded("llava")[1]))


def test_text_only_behaviour_is_unchanged_without_vision():
    value = qa([{"type": "image", "image": "x.png"}, {"type": "text", "text": "hi"}])
    with pytest.raises(RecordRejected) as info:
        to_conversation(value)
    assert info.value.reason == errors.INVALID_CONTENT
    with pytest.raises(RecordRejected):
        to_conversation({"image": "x.png", "conversations": [{"from": "human", "value": "<image>hi"},
                                                            {"from": "gpt", "value": "ok"}]})
    with pytest.raises(RecordRejected) as info:
        to_conversation({"question": "q", "answer": "a"})
    assert info.value.reason == errors.UNKNOWN_FORMAT
    assert FormatOptions().to_json() == {"format": "auto", "field_map": {}, "role_map": {}, "system_prompt": None}
    # a literal "<image>" in a text-only job is just text
    assert to_conversation(qa("<image> is an HTML-ish tag")).images == ()


def test_vqa_field_map_and_text_rows_in_a_vision_job(images_dir):
    from transforms.config import TokenizeOptions
    from transforms.rows import RowBuilder
    from transforms.vision.part import ImageOptions, ImagePart

    tokenizer, vision = loaded("llava")
    path = sample("vlm/torchtune/tests/assets/vqa_tiny.json")
    images = ImagePart(tokenizer=tokenizer, vision=vision,
                       image_options=ImageOptions(image_root=str(path.parent.parent.parent)))
    b = RowBuilder(tokenizer=tokenizer, tokenize_options=TokenizeOptions(), images=images,
                   format_options=FormatOptions(format="vqa", field_map={"question": "input", "answer": "output"}))
    (kind, row), = b.build_records(list(iter_raw_records_from_path(str(path))))
    assert kind == "row" and row["format"] == "vqa" and row["image_original_hw"].tolist() == [100, 100]
    assert tokenizer.decode(trained_runs(row["labels"])[0]) == "PyTorch logo.<|im_end|>"
    kind, text_row = one("llava", qa("no image here"), images_dir / "r.json")
    assert kind == "row" and text_row["num_images"] == 0 and text_row["image_bytes"] == []


# -- rejections ------------------------------------------------------------------------------------

def test_each_image_problem_has_its_own_reason(images_dir):
    truncated = png_bytes((200, 200), (1, 2, 3))
    (images_dir / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (images_dir / "text.png").write_bytes(b"this is not an image")
    write_image(images_dir / "huge.png", (3000, 2000), (0, 0, 0))
    outside = images_dir.parent / "outside.png"
    write_image(outside, (10, 10))
    os.symlink(outside, images_dir / "link.png")
    source = images_dir / "records.json"
    cases = {
        "missing.png": errors.MISSING_IMAGE,
        "truncated.png": errors.BAD_IMAGE,
        "text.png": errors.BAD_IMAGE,
        "huge.png": errors.IMAGE_TOO_LARGE,
        "../outside.png": errors.IMAGE_PATH_ESCAPE,
        str(outside): errors.IMAGE_PATH_ESCAPE,
        "link.png": errors.IMAGE_PATH_ESCAPE,
        "sub/../../outside.png": errors.IMAGE_PATH_ESCAPE,
        "https://example.com/cat.jpg": errors.MISSING_IMAGE,
        "data:image/png;base64,!!!notbase64": errors.BAD_IMAGE,
        "": errors.MISSING_IMAGE,
    }
    b = builder("qwen", max_image_pixels=5_000_000)
    raws = [raw(qa("<image>What?", images=[ref]), str(source), i) for i, ref in enumerate(cases)]
    results = b.build_records(raws)
    for (ref, reason), (kind, item) in zip(cases.items(), results):
        assert kind == "rejected" and item["reason"] == reason, (ref, item)
        assert item["record"]["images"] == [ref]
    # count mismatches: tags vs list, and literal image tokens in the text
    kind, item = one("qwen", qa("<image><image>two?", images=["red.png"]), source)
    assert item["reason"] == errors.IMAGE_COUNT_MISMATCH
    # a literal image token in the text stays text (--control-tokens-in-data text): the image count is exact
    kind, item = one("qwen", qa("<image> and a literal <|image_pad|>", images=["red.png"]), source)
    assert kind == "row" and item["literal_control_tokens"] == 1, item
    assert item["num_image_tokens"] == len(image_token_positions(item, loaded("qwen")[1]))
    kind, item = one("qwen", qa("<image> and a literal <|image_pad|>", images=["red.png"]), source,
                     control_tokens="special")
    assert item["reason"] == errors.IMAGE_COUNT_MISMATCH
    kind, item = one("llava", qa("literal <image> tag", answer="x"), source, format="auto")
    assert kind == "rejected" and item["reason"] == errors.IMAGE_COUNT_MISMATCH  # a stray tag is never trained as text


def test_real_edge_case_file_images_missing():
    path = sample("edge_cases/qwen3vl_single_images_trailing_comma.json")
    results = builder("qwen").build_records(list(iter_raw_records_from_path(str(path))))
    assert [item["reason"] for _, item in results] == [errors.MISSING_IMAGE] * 3


def test_inline_images_data_uri_and_hf_image_feature(images_dir):
    data = (images_dir / "red.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    for ref in (uri, {"bytes": uri.replace("image/png", "application/octet-stream"), "path": "red.png"},
                {"bytes": None, "path": "red.png"}):
        kind, row = one("qwen", qa("<image>?", images=[ref]), images_dir / "r.json")
        assert kind == "row" and row["image_original_hw"].tolist() == [30, 40], ref


# -- decoding ----------------------------------------------------------------------------------------

def encoded(image: Image.Image, fmt="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_modes_become_rgb_and_exif_orientation_is_applied():
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))  # fully transparent red -> white
    assert (decode_image(encoded(rgba)).array == 255).all()
    half = Image.new("RGBA", (4, 2), (0, 0, 0, 128))
    assert decode_image(encoded(half)).array[0, 0].tolist() == [127, 127, 127]
    palette = Image.new("P", (4, 2), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert decode_image(encoded(palette)).array[0, 0].tolist() == [10, 20, 30]
    palette.info["transparency"] = 1
    assert decode_image(encoded(palette)).array[0, 0].tolist() == [255, 255, 255]
    assert decode_image(encoded(Image.new("L", (3, 3), 77))).array[1, 1].tolist() == [77, 77, 77]
    cmyk = decode_image(encoded(Image.new("CMYK", (3, 3), (0, 255, 255, 0)), "JPEG", quality=100)).array
    assert cmyk[1, 1, 0] > 200 and cmyk[1, 1, 1] < 60
    wide = Image.new("I;16", (3, 2))
    wide.putdata([65535] * 6)
    assert decode_image(encoded(wide)).array.max() == 255
    # EXIF orientation 6 (rotate 90 CW to display): a 40x20 landscape file shows as 20x40 portrait
    tall = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encoded(tall, "JPEG", exif=exif))
    assert decoded.array.shape == (40, 20, 3) and decoded.original_hw == (40, 20)
    with pytest.raises(RecordRejected) as info:
        decode_image(encoded(Image.new("RGB", (100, 100))), max_pixels=9_999)
    assert info.value.reason == errors.IMAGE_TOO_LARGE


def test_sources_and_root_resolution(tmp_path):
    assert image_source({"type": "x", "url": "a.png"}).value == "a.png"
    assert image_source("file://a/b.png").value == "a/b.png"
    assert resolve_image_path("sub/x.png", str(tmp_path)) == str(tmp_path / "sub" / "x.png")
    assert resolve_image_path("a/../b.png", "gs://bucket/data") == "gs://bucket/data/b.png"
    with pytest.raises(RecordRejected):
        resolve_image_path("../x.png", "gs://bucket/data")


# -- labels and truncation ------------------------------------------------------------------------------

def test_image_tokens_are_never_trained_even_in_assistant_turns_or_with_loss_all(images_dir):
    value = qa("Draw it", answer="Here: <image> done", images=["red.png"])
    for options in ({}, {"loss": "all"}):
        kind, row = one("qwen", value, images_dir / "r.json", **options)
        assert kind == "row"
        span = image_token_positions(row, loaded("qwen")[1])
        lo, hi = span[0] - 1, span[-1] + 2  # with <|vision_start|> / <|vision_end|>
        assert (row["labels"][lo:hi] == -100).all() and (row["labels"] != -100).sum() > 0


def multi_turn(n):
    messages = []
    for i in range(n):
        messages += [{"role": "user", "content": f"<image>Question {i}?"},
                     {"role": "assistant", "content": f"Answer {i}."}]
    return {"messages": messages, "images": ["red.png", "blue.jpg", "sub/green.png"][:n]}


def test_truncation_never_splits_an_image_span(images_dir):
    tokenizer, vision = loaded("qwen")
    source = images_dir / "r.json"
    kind, full = one("qwen", multi_turn(3), source)
    spans = np.split(image_token_positions(full, vision), np.cumsum(full["image_token_counts"])[:-1])
    # turns: whole oldest exchanges go, with their images
    kind, row = one("qwen", multi_turn(3), source, max_length=full["length"] - 5, truncation="turns")
    assert kind == "row" and row["num_images"] == 2 and row["image_sources"] == ["blue.jpg", "sub/green.png"]
    assert "Question 0" not in tokenizer.decode(row["input_ids"]) and row["num_turns"] == 4
    assert len(image_token_positions(row, vision)) == row["num_image_tokens"] == sum(row["image_token_counts"])
    # right: a limit falling inside the last image cuts before its <|vision_start|>
    inside = int(spans[2][3])
    kind, row = one("qwen", multi_turn(3), source, max_length=inside, truncation="right")
    assert kind == "row" and row["num_images"] == 2 and row["length"] == int(spans[2][0]) - 1
    assert row["input_ids"][-1] != vision.vision_start_id
    assert len(image_token_positions(row, vision)) == row["num_image_tokens"]
    # left: a window starting inside the first image starts after its <|vision_end|>
    start = int(spans[0][2])
    kind, row = one("qwen", multi_turn(3), source, max_length=full["length"] - start, truncation="left")
    assert kind == "row" and row["num_images"] == 2 and row["image_sources"] == ["blue.jpg", "sub/green.png"]
    assert row["length"] == full["length"] - (int(spans[0][-1]) + 2)
    assert len(image_token_positions(row, vision)) == row["num_image_tokens"]
    kind, item = one("qwen", multi_turn(3), source, max_length=full["length"] - 1, truncation="drop")
    assert kind == "rejected" and item["reason"] == errors.TOO_LONG


# -- storage ---------------------------------------------------------------------------------------------

def test_store_pixels_and_encodings(images_dir):
    source = images_dir / "r.json"
    value = qa("<image>?", images=["blue.jpg"])
    _, webp = one("llava", value, source)
    assert webp["image_bytes"][0][8:12] == b"WEBP"
    _, png = one("llava", value, source, encoding="png")
    assert png["image_bytes"][0][:4] == b"\x89PNG"
    assert np.array_equal(decode_stored(webp["image_bytes"][0]), decode_stored(png["image_bytes"][0]))
    _, raw_row = one("llava", value, source, store_pixels=True)
    _, jpeg = one("llava", value, source, encoding="jpeg")
    hw = tuple(png["image_hw"].tolist())
    exact = decode_stored(png["image_bytes"][0])
    assert exact.shape == (224, 224, 3) and hw == (224, 224)
    assert np.array_equal(decode_stored(raw_row["image_pixels"][0], hw, raw=True), exact)
    assert np.abs(decode_stored(jpeg["image_bytes"][0]).astype(int) - exact).max() <= 8
    assert len(raw_row["image_pixels"][0]) == 224 * 224 * 3
    assert png["input_ids"].tolist() == raw_row["input_ids"].tolist() == jpeg["input_ids"].tolist()
    import hashlib

    assert png["image_sha256"] == [hashlib.sha256(png["image_bytes"][0]).hexdigest()]
    assert json.dumps(png["image_sources"])


# -- the bundled example set ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llava", "qwen"])
def test_bundled_examples_build_completely(kind):
    from chatshards_testing import REPO

    root = REPO / "examples" / "images"
    b = builder(kind, image_root=str(root))
    tokenizer, vision = loaded(kind)
    rows = []
    for name, fmt in (("llava_style.json", "auto"), ("messages.jsonl", "auto"), ("vqa.jsonl", "vqa")):
        b.format_options = FormatOptions(format=fmt, images=True)
        results = b.build_records(list(iter_raw_records_from_path(str(REPO / "examples" / "vision" / name))))
        assert all(k == "row" for k, _ in results), [item for k, item in results if k != "row"]
        rows += [row for _, row in results]
    assert len(rows) == 7 + 5 + 7 and sum(r["num_images"] for r in rows) == 7 + (2 + 2 + 1 + 1 + 0) + 7
    for row in rows:
        assert len(image_token_positions(row, vision)) == row["num_image_tokens"]
        assert (row["labels"][image_token_positions(row, vision)] == -100).all()
    exif_row = next(r for r in rows if r["image_sources"] == ["yellow_bar_exif_rotated.jpg"])
    assert exif_row["image_original_hw"].tolist() == [120, 80]  # stored 120x80 landscape, shown portrait
    pixels = decode_stored(exif_row["image_bytes"][0])
    top, bottom = pixels[: pixels.shape[0] // 8].mean(axis=(0, 1)), pixels[-pixels.shape[0] // 8:].mean(axis=(0, 1))
    if kind == "qwen":  # no crop: the yellow bar is at the top
        assert top[2] < 120 < bottom[2]
    rgba_row = next(r for r in rows if r["image_sources"] == ["green_diamond_rgba.png"])
    assert (decode_stored(rgba_row["image_bytes"][0])[0, 0] >= 250).all()  # transparent corner -> white


def test_each_image_is_prepared_once_across_records_and_batches(images_dir, monkeypatch):
    b = builder("qwen")
    calls = []
    original = b.images.prepare_image
    monkeypatch.setattr(b.images, "prepare_image", lambda source, key: calls.append(key) or original(source, key))
    source = str(images_dir / "r.json")
    batch = [raw(qa("<image><image>?", images=["red.png", "blue.jpg"]), source, i) for i in range(6)]
    assert all(kind == "row" for kind, _ in b.build_records(batch))
    assert all(kind == "row" for kind, _ in b.build_records(batch[:2]))  # next batch: from the cache
    assert sorted(Path(key[1]).name for key in calls) == ["blue.jpg", "red.png"]
