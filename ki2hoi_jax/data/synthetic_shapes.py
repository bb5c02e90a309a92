"""Shapes of the synthetic datasets: primitives, objects, person, background.

What each part of a synthetic image looks like; synthetic_scenes.py decides
which parts an image shows and where.

* Person (`figure`): a fixed-colour figure: skin-coloured round head and
  arms, navy torso, dark legs; part sizes follow its standing height P.
* Objects (`draw_object`, 8 classes), each a distinct shape and colour:
  sports_ball = orange disc with black seams; bicycle = two black rings with
  a red frame; skateboard = yellow flat board on black wheels; umbrella = teal
  dome with white ribs on a dark hooked handle; backpack = green rounded box
  with a light pocket; chair = brown side-view chair; cup = purple tapered cup
  with a handle; kite = pink/white diamond with a tail. The objects of world
  'compositional' are drawn by synthetic_objects.py.
* Background (`background`): muted sky and ground colours, a smooth texture
  and low-contrast clutter.

Parts are lists of primitives (below) that `render` draws with PIL, without
anti-aliasing, so equal inputs give equal pixels.
"""

import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

MIN_BOX = 12  # Smallest object side in pixels.

# Fixed colours (RGB).
SKIN = (232, 184, 140)
SHIRT = (32, 42, 118)
LEGS = (58, 52, 48)
MOUTH = (170, 20, 30)
BLACK = (22, 22, 22)
WHITE = (245, 245, 245)
OBJECT_COLOURS = {
    "sports_ball": (238, 122, 22),
    "bicycle": (205, 30, 40),
    "skateboard": (236, 200, 30),
    "umbrella": (0, 160, 170),
    "backpack": (40, 142, 52),
    "chair": (128, 72, 28),
    "cup": (150, 48, 172),
    "kite": (232, 58, 142),
}
# Object size (width, height) in units of the person height P.
_OBJECT_SIZES = {
    "sports_ball": (0.22, 0.22),
    "bicycle": (0.80, 0.50),
    "skateboard": (0.50, 0.12),
    "umbrella": (0.62, 0.50),
    "backpack": (0.24, 0.32),
    "chair": (0.36, 0.62),
    "cup": (0.13, 0.16),
    "kite": (0.27, 0.36),
}


# ----------------------------------------------------------------- drawing
# A primitive is a tuple (kind, geometry, fill, extra, size): geometry is a box
# (x0, y0, x1, y1) or a point list, extra the outline colour (ellipse) or the
# (start, end) angles (chord, arc), size the line width or the corner radius
# (rect). A scene item is (who, primitive) with who in {'p' (person), 'o'
# (object), 'x' (neither, e.g. a kite string or motion lines)}. Coordinates
# are image pixels (y down).

Prim = tuple
Point = Tuple[float, float]


def ellipse(cx, cy, rx, ry, fill, outline=None, width=1) -> Prim:
  return ("ellipse", (cx - rx, cy - ry, cx + rx, cy + ry), fill, outline, width)


def rect(x0, y0, x1, y1, fill, radius=0.0) -> Prim:
  return ("rect", (x0, y0, x1, y1), fill, None, radius)


def line(points: Sequence[Point], fill, width) -> Prim:
  return ("line", tuple(points), fill, None, width)


def poly(points: Sequence[Point], fill) -> Prim:
  return ("poly", tuple(points), fill, None, 1)


def chord(box, start, end, fill) -> Prim:
  return ("chord", tuple(box), fill, (start, end), 1)


def arc(box, start, end, fill, width) -> Prim:
  return ("arc", tuple(box), fill, (start, end), width)


def _w(value: float) -> int:
  """Line width in whole pixels (at least 1)."""
  return max(1, int(round(value)))


def bounds(prim: Prim) -> Tuple[float, float, float, float]:
  """Approximate pixel extent (x0, y0, x1, y1) of a primitive."""
  kind, geom = prim[0], prim[1]
  if kind in ("line", "poly"):
    half = prim[4] / 2.0 if kind == "line" else 0.0
    xs = [p[0] for p in geom]
    ys = [p[1] for p in geom]
    return min(xs) - half, min(ys) - half, max(xs) + half, max(ys) + half
  return geom


def render(draw: ImageDraw.ImageDraw, prim: Prim, mask: bool = False) -> None:
  """Draws one primitive; `mask` draws it in white on an 'L' image."""
  kind, geom, fill, extra, width = prim
  if mask:
    fill = 255
  rnd = lambda seq: [int(round(v)) for v in seq]
  if kind == "ellipse":
    outline = (255 if mask else extra) if extra is not None else None
    draw.ellipse(rnd(geom), fill=fill, outline=outline, width=_w(width))
  elif kind == "rect":
    box = rnd(geom)
    if width > 0:
      draw.rounded_rectangle(box, radius=int(round(width)), fill=fill)
    else:
      draw.rectangle(box, fill=fill)
  elif kind == "line":
    pts = [tuple(rnd(p)) for p in geom]
    draw.line(pts, fill=fill, width=_w(width), joint="curve")
  elif kind == "poly":
    draw.polygon([tuple(rnd(p)) for p in geom], fill=fill)
  elif kind == "chord":
    draw.chord(rnd(geom), extra[0], extra[1], fill=fill)
  elif kind == "arc":
    draw.arc(rnd(geom), extra[0], extra[1], fill=fill, width=_w(width))
  else:
    raise ValueError(kind)


def jitter(colour, cj) -> Tuple[int, int, int]:
  return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(colour, cj))


def object_size(obj: str, p: float) -> Tuple[float, float]:
  rw, rh = _OBJECT_SIZES[obj]
  return max(rw * p, MIN_BOX), max(rh * p, MIN_BOX)


def bike_points(x0, y0, w, h, f) -> Dict[str, Point]:
  """Key points of a side-view bicycle in box (x0, y0, w, h) facing f=+-1."""
  cx, y1 = x0 + w / 2, y0 + h
  r = min(0.2 * w, 0.34 * h)
  return {
      "rear": (cx - f * (w / 2 - r), y1 - r),
      "front": (cx + f * (w / 2 - r), y1 - r),
      "bb": (cx, y1 - r),
      "seat": (cx - f * 0.14 * w, y0 + 0.16 * h),
      "head": (cx + f * (w / 2 - r - 0.06 * w), y0 + 0.24 * h),
      "bar": (cx + f * (w / 2 - r - 0.02 * w), y0 + 0.03 * h),
      "r": (r, r),
  }


# One function per object class: (x0, y0, w, h) is the box the object fills,
# f its facing (+-1), p the person height (line widths), c its colour.


def _sports_ball(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f, p  # A ball looks the same either way.
  x1, y1, cx, cy = x0 + w, y0 + h, x0 + w / 2, y0 + h / 2
  seam = max(1.0, w / 14)
  return [ellipse(cx, cy, w / 2, h / 2, c),
          line([(x0 + 1, cy), (x1 - 1, cy)], BLACK, seam),
          line([(cx, y0 + 1), (cx, y1 - 1)], BLACK, seam),
          arc((x0 - 0.45 * w, y0 + 0.1 * h, cx - 0.05 * w, y1 - 0.1 * h),
              -60, 60, BLACK, seam),
          arc((cx + 0.05 * w, y0 + 0.1 * h, x1 + 0.45 * w, y1 - 0.1 * h),
              120, 240, BLACK, seam)]


def _bicycle(x0, y0, w, h, f, p, c) -> List[Prim]:
  k = bike_points(x0, y0, w, h, f)
  r = k["r"][0]
  tyre = max(2.0, 0.3 * r)
  frame = max(2.0, 0.05 * p)
  prims = [ellipse(*k["rear"], r, r, None, BLACK, tyre),
           ellipse(*k["front"], r, r, None, BLACK, tyre)]
  prims.append(line([k["rear"], k["bb"], k["seat"], k["rear"]], c, frame))
  prims.append(line([k["seat"], k["head"], k["bb"]], c, frame))
  prims.append(line([k["front"], k["head"], k["bar"]], c, frame))
  sx, sy = k["seat"]
  prims.append(line([(sx - 0.07 * w, y0 + frame / 2),
                     (sx + 0.07 * w, y0 + frame / 2)], BLACK, frame))
  prims.append(line([(sx, y0 + frame / 2), (sx, sy)], c, frame))
  bx, by = k["bar"]
  prims.append(line([(bx - f * 0.06 * w, by), (bx + f * 0.02 * w, by)],
                    BLACK, frame))
  return prims


def _skateboard(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f, p  # Symmetric; no lines.
  x1, y1 = x0 + w, y0 + h
  deck_top, deck_bottom = y0, y0 + 0.55 * h
  wr = 0.25 * h
  return [rect(x0, deck_top, x1, deck_bottom, c, radius=0.25 * h),
          ellipse(x0 + 0.22 * w, y1 - wr, wr, wr, BLACK),
          ellipse(x1 - 0.22 * w, y1 - wr, wr, wr, BLACK)]


def _umbrella(x0, y0, w, h, f, p, c) -> List[Prim]:
  x1, y1, cx = x0 + w, y0 + h, x0 + w / 2
  thin = max(1.0, 0.03 * p)
  ch = 0.45 * h
  prims = [chord((x0, y0, x1, y0 + 2 * ch), 180, 360, c)]
  for t in (-0.3, 0.0, 0.3):
    prims.append(line([(cx, y0), (cx + t * w, y0 + ch)], WHITE, thin))
  hook = max(2.0, 0.05 * p)
  hw = max(2.0, 0.035 * p)
  prims.append(line([(cx, y0 + ch - 1), (cx, y1 - hook)], BLACK, hw))
  prims.append(arc((cx - f * 2 * hook - hook, y1 - 2 * hook,
                    cx - f * 2 * hook + hook, y1), 0, 180, BLACK, hw))
  return prims


def _backpack(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f, p  # Seen from behind; no lines.
  x1, y1, cx = x0 + w, y0 + h, x0 + w / 2
  light = jitter(c, (60, 55, 45))
  return [rect(x0, y0 + 0.12 * h, x1, y1, c, radius=0.2 * w),
          arc((cx - 0.22 * w, y0, cx + 0.22 * w, y0 + 0.3 * h), 180, 360,
              c, max(2.0, 0.08 * w)),
          rect(x0 + 0.18 * w, y0 + 0.55 * h, x1 - 0.18 * w, y1 - 0.1 * h,
               light, radius=0.1 * w)]


def _chair(x0, y0, w, h, f, p, c) -> List[Prim]:
  y1, cx = y0 + h, x0 + w / 2
  t = max(2.0, 0.05 * p)
  seat = y1 - 0.45 * h
  back_x = cx - f * (w / 2 - t / 2)
  front_x = cx + f * (w / 2 - t / 2)
  return [line([(back_x, y0), (back_x, y1)], c, t),
          rect(min(back_x, front_x) - t / 2, seat, max(back_x, front_x)
               + t / 2, seat + t, c),
          line([(front_x, seat), (front_x, y1)], c, t),
          line([(back_x, y0 + 0.12 * h), (back_x + f * 0.22 * w,
                                           y0 + 0.12 * h)], c, t)]


def _cup(x0, y0, w, h, f, p, c) -> List[Prim]:
  del p  # Line widths follow the cup's own size.
  x1, y1, cy = x0 + w, y0 + h, y0 + h / 2
  body_x1 = x1 - 0.28 * w if f > 0 else x1
  body_x0 = x0 if f > 0 else x0 + 0.28 * w
  bw = body_x1 - body_x0
  hx = body_x1 if f > 0 else body_x0
  ring = max(1.5, 0.09 * w)
  return [ellipse(hx, cy, 0.28 * w, 0.24 * h, None, c, ring),
          poly([(body_x0, y0), (body_x1, y0), (body_x1 - 0.15 * bw, y1),
                (body_x0 + 0.15 * bw, y1)], c),
          line([(body_x0 + 1, y0 + 1), (body_x1 - 1, y0 + 1)], WHITE,
               max(1.0, 0.08 * h))]


def _kite(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f  # Symmetric.
  x1, y1, cx = x0 + w, y0 + h, x0 + w / 2
  dh = 0.72 * h
  top, left, bottom, right = ((cx, y0), (x0, y0 + 0.36 * dh),
                              (cx, y0 + dh), (x1, y0 + 0.36 * dh))
  mid = (cx, y0 + 0.36 * dh)
  tail_w = max(1.0, 0.02 * p)
  bow = max(2.0, 0.04 * p)
  ty = [y0 + dh + (y1 - y0 - dh) * t for t in (0.33, 0.66, 1.0)]
  prims = [poly([top, right, bottom, left], c),
           poly([top, right, mid], WHITE),
           poly([bottom, left, mid], WHITE),
           line([top, bottom], BLACK, tail_w),
           line([left, right], BLACK, tail_w),
           line([bottom, (cx + 0.12 * w, ty[0]), (cx - 0.12 * w, ty[1]),
                 (cx, ty[2])], BLACK, tail_w)]
  for yy, xx in ((ty[0], cx + 0.12 * w), (ty[1], cx - 0.12 * w)):
    prims.append(poly([(xx - bow, yy - bow / 2), (xx + bow, yy + bow / 2),
                       (xx + bow, yy - bow / 2), (xx - bow, yy + bow / 2)],
                      c))
  return prims


_OBJECTS = {"sports_ball": _sports_ball, "bicycle": _bicycle,
            "skateboard": _skateboard, "umbrella": _umbrella,
            "backpack": _backpack, "chair": _chair, "cup": _cup,
            "kite": _kite}


def draw_object(obj: str, x0: float, y0: float, w: float, h: float, f: int,
                p: float, cj) -> List[Prim]:
  """Primitives of an object filling the box (x0, y0, w, h); f = facing."""
  if obj not in _OBJECTS:
    raise ValueError(obj)
  return _OBJECTS[obj](x0, y0, w, h, f, p, jitter(OBJECT_COLOURS[obj], cj))


def figure(p: float, hip: Point, feet: Sequence[Point],
           hands: Sequence[Point],
           elbows: Sequence[Optional[Point]] = (None, None),
           knees: Sequence[Optional[Point]] = (None, None),
           front_arms: Sequence[int] = (), smile: bool = False):
  """A person: head, torso, two arms and two legs.

  Args:
    p: standing height in pixels (sets part sizes).
    hip: centre of the hips; the torso and head sit above it.
    feet, hands: two points each (index 0 = left limb, 1 = right limb).
    elbows, knees: optional bend points per limb.
    front_arms: arms returned in the `front` list (drawn over an object).
    smile: draw a mouth arc on the head.

  Returns:
    (back, front): lists of primitives.
  """
  hx, hy = hip
  arm_w, leg_w = max(2.0, 0.055 * p), max(2.0, 0.075 * p)
  head_r = 0.085 * p
  torso_top = hy - 0.36 * p
  head_c = (hx, torso_top - head_r)
  back, front = [], []
  for i in range(2):
    hip_j = (hx + (2 * i - 1) * 0.055 * p, hy - 0.01 * p)
    pts = [hip_j] + ([knees[i]] if knees[i] else []) + [feet[i]]
    back.append(line(pts, LEGS, leg_w))
  back.append(rect(hx - 0.11 * p, torso_top, hx + 0.11 * p, hy, SHIRT,
                   radius=0.03 * p))
  back.append(ellipse(head_c[0], head_c[1], head_r, head_r, SKIN))
  if smile:
    back.append(arc((head_c[0] - 0.05 * p, head_c[1] - 0.04 * p,
                     head_c[0] + 0.05 * p, head_c[1] + 0.055 * p), 25, 155,
                    MOUTH, max(1.0, 0.02 * p)))
  for i in range(2):
    shoulder = (hx + (2 * i - 1) * 0.10 * p, torso_top + 0.04 * p)
    pts = [shoulder] + ([elbows[i]] if elbows[i] else []) + [hands[i]]
    (front if i in front_arms else back).append(line(pts, SKIN, arm_w))
  return back, front


def background(rng: np.random.Generator, width: int,
               height: int) -> np.ndarray:
  """[H, W, 3] float32 background: muted sky/ground, smooth texture, clutter."""
  def muted():
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.04, 0.25),
                              rng.uniform(0.58, 0.9))
    return np.array(rgb, np.float32) * 255

  sky, ground = muted(), muted()
  horizon = int(height * rng.uniform(0.35, 0.75))
  img = np.empty((height, width, 3), np.float32)
  ramp = np.linspace(-12, 12, height, dtype=np.float32)[:, None, None]
  img[:] = sky
  img[horizon:] = ground
  img += ramp * rng.choice([-1.0, 1.0])
  # Smooth texture: a coarse random grid upsampled bilinearly.
  gh, gw = rng.integers(3, 8, size=2)
  grid = rng.normal(128, 14, size=(gh, gw, 3)).clip(0, 255).astype(np.uint8)
  smooth = np.asarray(Image.fromarray(grid).resize((width, height),
                                                   Image.BILINEAR), np.float32)
  img += smooth - 128.0
  # Low-contrast clutter: a few grey strokes and patches.
  clutter = Image.new("L", (width, height), 0)
  cd = ImageDraw.Draw(clutter)
  for _ in range(int(rng.integers(2, 7))):
    x0, x1 = sorted(rng.uniform(0, width, 2))
    y0, y1 = sorted(rng.uniform(0, height, 2))
    level = int(rng.integers(1, 3))
    if rng.uniform() < 0.5:
      cd.line([(x0, y0), (x1, y1)], fill=level, width=int(rng.integers(1, 4)))
    else:
      cd.rectangle([x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3],
                   fill=level)
  c = np.asarray(clutter, np.float32)[..., None]
  img += np.where(c > 0, (c - 1.5) * 2 * 14.0, 0.0)
  return img
