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
                  max_triplets: int = 10) -> Image.Image:
  """Draws human/object boxes, a line per pair and a label per triplet.

  Args:
    image: the original image (any mode; converted to RGB).
    triplets: dicts with `human_box` and `object_box` ([x1, y1, x2, y2] in
      pixels of `image`), `verb`, `object`, `score`; drawn in the given order.
    max_triplets: at most this many are drawn.

  Returns:
    A new RGB image, upscaled so that its short side is at least 480 px so
    labels stay legible on small inputs.
  """
  rgb = image.convert("RGB")
  scale = max(1.0, 480.0 / min(rgb.size))
  if scale > 1.0:
    rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)),
                     Image.BICUBIC)
  draw = ImageDraw.Draw(rgb)
  font = _font(max(12, int(min(rgb.size) / 36)))
  width = max(2, int(min(rgb.size) / 200))
  label_y = {}
  for t in list(triplets)[:max_triplets]:
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
    text = f"person {t['verb'].replace('_', ' ')} {t['object'].replace('_', ' ')} {t['score']:.2f}"
    # Stack labels of the same human box so they do not overlap.
    key = tuple(round(v) for v in h[:2])
    row = label_y.get(key, 0)
    label_y[key] = row + 1
    x, y = h[0], max(0, h[1] - (row + 1) * (font.size + 6))
    box = draw.textbbox((x, y), text, font=font)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2],
                   fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
  return rgb


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
