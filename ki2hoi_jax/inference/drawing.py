"""Drawing HOI triplets on images (PNG output of predict and the notebooks)."""

import colorsys
from typing import Dict, List, Sequence

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


def draw_triplets(image: Image.Image, triplets: Sequence[Dict],
                  max_triplets: int = 10,
                  min_short_side: int = 480) -> Image.Image:
  """Draws human/object boxes, a line per pair and a label per triplet.

  Args:
    image: the original image (any mode; converted to RGB).
    triplets: dicts with `human_box` and `object_box` ([x1, y1, x2, y2] in
      pixels of `image`), `verb`, `object`, `score`; drawn in the given order.
    max_triplets: at most this many are drawn.
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
  shown = list(triplets)[:max_triplets]
  # Boxes first, then the labels on top of them.
  for t in shown:
    h = [v * scale for v in t["human_box"]]
    o = [v * scale for v in t["object_box"]]
    colour = _object_colour(sum(map(ord, t["object"])))
    draw.rectangle(h, outline=HUMAN_COLOUR, width=width)
    draw.rectangle(o, outline=colour, width=width)
    hc = ((h[0] + h[2]) / 2, (h[1] + h[3]) / 2)
    oc = ((o[0] + o[2]) / 2, (o[1] + o[3]) / 2)
    draw.line([hc, oc], fill=(255, 255, 0), width=width)
    draw.ellipse([hc[0] - 2 * width, hc[1] - 2 * width, hc[0] + 2 * width,
                  hc[1] + 2 * width], fill=HUMAN_COLOUR)
  placed = []
  for t in shown:
    h = [v * scale for v in t["human_box"]]
    text = (f"person {t['verb'].replace('_', ' ')} "
            f"{t['object'].replace('_', ' ')} {t['score']:.2f}")
    x, y = _label_position(draw, text, font, h, placed, rgb.size)
    box = draw.textbbox((x, y), text, font=font)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2],
                   fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
  return rgb


def _label_position(draw, text, font, human_box, placed, size):
  """Top-left of a label near the human box that overlaps no earlier label.

  Tries just above the box, then rows further up and down; the label is kept
  inside the image horizontally. `placed` (rectangles of earlier labels)
  gets the chosen rectangle appended.
  """
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  tw, th = right - left + 4, bottom - top + 4
  img_w, img_h = size
  x = min(max(0.0, human_box[0]), max(0.0, img_w - tw))
  start = human_box[1] - th
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
