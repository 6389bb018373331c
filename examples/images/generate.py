"""Generate chatshards' bundled example image set and the matching vision records.

Everything here is made by this script (no third-party images): simple shapes in named colours on
plain backgrounds, so every question has an unambiguous answer. Run from the repository root::

    python examples/images/generate.py

Writes ``examples/images/*.png|jpg`` and ``examples/vision/{llava_style.json,messages.jsonl,vqa.jsonl}``
(image paths relative to ``examples/images``: use ``--image-root examples/images``). The output is
deterministic: running it again rewrites identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
RECORDS = HERE.parent / "vision"

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "purple": (140, 60, 170), "orange": (245, 140, 30)}
BACKGROUNDS = {"white": (255, 255, 255), "grey": (200, 200, 200), "black": (20, 20, 20)}
# name, shape, colour, background, (width, height)
SHAPES = [
    ("red_circle", "circle", "red", "white", (160, 120)),
    ("green_square", "square", "green", "white", (120, 120)),
    ("blue_triangle", "triangle", "blue", "grey", (200, 150)),
    ("yellow_circle", "circle", "yellow", "black", (96, 160)),
    ("purple_square", "square", "purple", "grey", (240, 96)),
    ("orange_triangle", "triangle", "orange", "white", (128, 128)),
]


def draw(shape: str, colour, background, size) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, background)
    pen = ImageDraw.Draw(image)
    side = int(min(width, height) * 0.6)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(left + side // 2, top), (left, top + side), (left + side, top + side)], fill=colour)
    return image


def two_shapes() -> Image.Image:
    """A red circle left of a blue square (for a question about positions)."""
    image = Image.new("RGB", (240, 120), BACKGROUNDS["white"])
    pen = ImageDraw.Draw(image)
    pen.ellipse((20, 20, 100, 100), fill=COLOURS["red"])
    pen.rectangle((140, 20, 220, 100), fill=COLOURS["blue"])
    return image


def transparent_star() -> Image.Image:
    """A green diamond on a transparent background (RGBA: the job composites it onto white)."""
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).polygon([(50, 5), (95, 50), (50, 95), (5, 50)], fill=COLOURS["green"] + (255,))
    return image


def rotated_photo() -> tuple[Image.Image, Image.Exif]:
    """A JPEG stored landscape with EXIF orientation 6: viewers (and the job) show it portrait,
    with the yellow bar at the top."""
    stored = Image.new("RGB", (120, 80), BACKGROUNDS["grey"])
    ImageDraw.Draw(stored).rectangle((0, 0, 20, 80), fill=COLOURS["yellow"])  # left edge -> top after rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    return stored, exif


def main() -> None:
    RECORDS.mkdir(parents=True, exist_ok=True)
    for name, shape, colour, background, size in SHAPES:
        draw(shape, COLOURS[colour], BACKGROUNDS[background], size).save(HERE / f"{name}.png", optimize=True)
    two_shapes().save(HERE / "circle_and_square.png", optimize=True)
    transparent_star().save(HERE / "green_diamond_rgba.png", optimize=True)
    stored, exif = rotated_photo()
    stored.save(HERE / "yellow_bar_exif_rotated.jpg", quality=90, exif=exif)

    llava = []
    for name, shape, colour, background, _ in SHAPES:
        llava.append({"id": name, "image": f"{name}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is in the picture, and what colour is it?"},
            {"from": "gpt", "value": f"A {colour} {shape} on a {background} background."},
            {"from": "human", "value": "Is there more than one shape?"},
            {"from": "gpt", "value": "No, there is exactly one shape."},
        ]})
    llava.append({"id": "no_tag", "image": "circle_and_square.png", "conversations": [
        {"from": "human", "value": "Which shape is on the left?"},   # no <image> tag: the image goes first
        {"from": "gpt", "value": "The red circle is on the left; the blue square is on the right."},
    ]})
    (RECORDS / "llava_style.json").write_text(json.dumps(llava, indent=2) + "\n")

    messages = [
        {"messages": [
            {"role": "user", "content": [{"type": "image", "image": "red_circle.png"},
                                         {"type": "image", "image": "green_square.png"},
                                         {"type": "text", "text": "Name the two shapes in order."}]},
            {"role": "assistant", "content": "First a red circle, then a green square."}]},
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "What colour is this shape?"},
                                         {"type": "image_url", "image_url": {"url": "blue_triangle.png"}}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": [{"type": "text", "text": "And this one?"},
                                         {"type": "image_url", "image_url": {"url": "orange_triangle.png"}}]},
            {"role": "assistant", "content": "Orange. Both are triangles."}]},
        {"messages": [{"role": "user", "content": "<image>What is on the transparent background?"},
                      {"role": "assistant", "content": "A green diamond (the transparency shows as white)."}],
         "images": ["green_diamond_rgba.png"]},
        {"messages": [{"role": "user", "content": "Where is the yellow bar?<image>"},
                      {"role": "assistant", "content": "At the top of the picture."}],
         "images": ["yellow_bar_exif_rotated.jpg"]},
        {"messages": [{"role": "user", "content": "No picture this time: what is 2 + 2?"},
                      {"role": "assistant", "content": "4."}]},
    ]
    (RECORDS / "messages.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))

    vqa = [{"image": f"{name}.png", "question": "What colour is the shape?", "answer": colour.capitalize() + "."}
           for name, _, colour, _, _ in SHAPES]
    vqa.append({"image": "circle_and_square.png", "question": "How many shapes are there?", "answer": "Two."})
    (RECORDS / "vqa.jsonl").write_text("".join(json.dumps(v) + "\n" for v in vqa))


if __name__ == "__main__":
    main()
