"""Drawing HOI triplets on images (PNG output of predict and the notebooks)."""

import colorsys
import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

HUMAN_COLOUR = (30, 144, 255)


def _object_colour(index: int):
  r, g, b = colorsys.hsv_to_rgb((index * 0.61803) % 1.0, 0.85, 0.95)
  return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Older Pillow without scalable default font.
    return ImageFont.load_default()


@dataclasses.dataclass(frozen=True)
class PairLabel:
  """The label block of one human-object pair.

  Attributes:
    human_box: [x1, y1, x2, y2] of the pair's human.
    object_box: [x1, y1, x2, y2] of its object.
    object: object name of the pair's first triplet (sets the box colour).
    lines: the text, one line each: "person - sports ball" then one
      "throw 0.75" per verb; when the pair's triplets name several objects,
      "person" then "throw sports ball 0.75" per triplet.
  """
  human_box: Tuple[float, ...]
  object_box: Tuple[float, ...]
  object: str
  lines: Tuple[str, ...]


def _name(name: str) -> str:
  return name.replace("_", " ")


def pair_labels(triplets: Sequence[Dict]) -> List[PairLabel]:
  """Groups triplets into one label block per human-object pair (pure).

  A pair is the triplets with the same `human_box` and `object_box` (after
  triplet NMS they come from one query, the JSON's `pair`). Pairs are in the
  order of their first triplet, verbs in the given order, each with its
  `score` (two decimals).

  Args:
    triplets: dicts with `human_box`, `object_box`, `verb`, `object`,
      `score` (predict's triplets, best first).

  Returns:
    The label blocks.
  """
  groups: Dict[Tuple, List[Dict]] = {}
  for t in triplets:
    key = (tuple(t["human_box"]), tuple(t["object_box"]))
    groups.setdefault(key, []).append(t)
  labels = []
  for (human, obj), members in groups.items():
    objects = {t["object"] for t in members}
    if len(objects) == 1:
      lines = [f"person - {_name(members[0]['object'])}"] + [
          f"{_name(t['verb'])} {t['score']:.2f}" for t in members]
    else:
      lines = ["person"] + [
          f"{_name(t['verb'])} {_name(t['object'])} {t['score']:.2f}"
          for t in members]
    labels.append(PairLabel(human, obj, members[0]["object"], tuple(lines)))
  return labels


def draw_triplets(image: Image.Image, triplets: Sequence[Dict],
                  max_triplets: int = 10,
                  min_short_side: int = 480) -> Image.Image:
  """Draws human/object boxes, a line and one label block per pair.

  Args:
    image: the original image (any mode; converted to RGB).
    triplets: dicts with `human_box` and `object_box` ([x1, y1, x2, y2] in
      pixels of `image`), `verb`, `object`, `score`; grouped into pairs by
      `pair_labels` (one block listing the pair's verbs), drawn in the order
      of each pair's first triplet.
    max_triplets: at most the first this many triplets are drawn.
    min_short_side: upscale small images to this short side so that labels
      stay legible (0 keeps the input size, e.g. to overlay the output).

  Returns:
    A new RGB image, upscaled so that its short side is at least
    `min_short_side` px.
  """
  rgb = image.convert("RGB")
  scale = max(1.0, float(min_short_side) / min(rgb.size))
  if scale > 1.0:
    rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)),
                     Image.BICUBIC)
  draw = ImageDraw.Draw(rgb)
  font = _font(max(12, int(min(rgb.size) / 36)))
  width = max(2, int(min(rgb.size) / 200))
  pairs = pair_labels(list(triplets)[:max_triplets])
  # Boxes first, then the labels on top of them.
  for p in pairs:
    h = [v * scale for v in p.human_box]
    o = [v * scale for v in p.object_box]
    colour = _object_colour(sum(map(ord, p.object)))
    draw.rectangle(h, outline=HUMAN_COLOUR, width=width)
    draw.rectangle(o, outline=colour, width=width)
    hc = ((h[0] + h[2]) / 2, (h[1] + h[3]) / 2)
    oc = ((o[0] + o[2]) / 2, (o[1] + o[3]) / 2)
    draw.line([hc, oc], fill=(255, 255, 0), width=width)
    draw.ellipse([hc[0] - 2 * width, hc[1] - 2 * width, hc[0] + 2 * width,
                  hc[1] + 2 * width], fill=HUMAN_COLOUR)
  placed = []
  for p in pairs:
    h = [v * scale for v in p.human_box]
    text = "\n".join(p.lines)
    x, y = _label_position(draw, text, font, h, placed, rgb.size)
    box = draw.multiline_textbbox((x, y), text, font=font)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2],
                   fill=(0, 0, 0))
    draw.multiline_text((x, y), text, fill=(255, 255, 255), font=font)
  return rgb


def _label_position(draw, text, font, human_box, placed, size):
  """Top-left of a label near the human box that overlaps no earlier label.

  Tries just above the box (moved down into the image when there is no room
  above), then rows further up and down; the label is kept inside the image
  horizontally. `placed` (rectangles of earlier labels) gets the chosen
  rectangle appended.
  """
  left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
  tw, th = right - left + 4, bottom - top + 4
  img_w, img_h = size
  x = min(max(0.0, human_box[0]), max(0.0, img_w - tw))
  start = min(max(0.0, human_box[1] - th), max(0.0, img_h - th))
  rows = [start - k * th for k in range(0, 40)] + [
      start + k * th for k in range(1, 40)]
  rows = [y for y in rows if 0 <= y <= img_h - th] or [0.0]
  rows.sort(key=lambda y: abs(y - start))
  for y in rows:
    rect = (x, y, x + tw, y + th)
    if not any(rect[0] < p[2] and p[0] < rect[2] and rect[1] < p[3] and
               p[1] < rect[3] for p in placed):
      placed.append(rect)
      return x, y
  placed.append((x, rows[0], x + tw, rows[0] + th))
  return x, rows[0]


def image_grid(images: List[Image.Image], columns: int = 3,
               cell: int = 320) -> Image.Image:
  """Tiles images into a grid of `cell`-sized thumbnails (notebooks)."""
  rows = max(1, int(np.ceil(len(images) / columns)))
  grid = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
  for i, im in enumerate(images):
    thumb = im.convert("RGB").copy()
    thumb.thumbnail((cell, cell))
    grid.paste(thumb, ((i % columns) * cell, (i // columns) * cell))
  return grid
