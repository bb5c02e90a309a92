r"""Synthetic HICO-DET / V-COCO-format datasets with a small, learnable grammar.

Writes real JPEG images and annotation files in the on-disk layout of the real
datasets (docs: hico.md sections 2 and 7), so that every part of the pipeline
(TFDS builder, training, evaluation, prediction files) runs unchanged on them:

  python -m ki2hoi_jax.data.synthetic --out /tmp/synth --num_train 400 \
      --num_test 100 --seed 0 [--image_size 256] [--dataset hico_det|vcoco]

HICO-DET mode writes `images/{train2015,test2015}/HICO_*.jpg`,
`annotations/{trainval_hico,test_hico}.json` and `annotations/corre_hico.npy`;
V-COCO mode writes `images/{train2014,val2014}/COCO_*.jpg`,
`annotations/{trainval_vcoco,test_vcoco}.json` and
`annotations/corre_vcoco.npy`.
Class ids are the real ones (COCO object ids, HICO verb/HOI ids, V-COCO verb
classes), restricted to the subset below (`hoi_subset()`).

Visual grammar
--------------
An image (longest side `image_size`, aspect ratio 3:4 to 4:3) shows 1-3
side-by-side, non-overlapping groups on a textured, noisy background of muted
colours. Each group is one person and (usually) one object and gives one
annotated pair. Everything is flip-invariant: the side (left or right) on
which things happen is random and never decides a label.

* Person: a fixed-colour figure: skin-coloured round head and arms, navy
  torso, dark legs. Standing height P (about 40-60 % of the image height).
* Objects (8 classes), each a distinct shape and colour:
  sports_ball = orange disc with black seams; bicycle = two black rings with
  a red frame; skateboard = yellow flat board on black wheels; umbrella = teal
  dome with white ribs on a dark hooked handle; backpack = green rounded box
  with a light pocket; chair = brown side-view chair; cup = purple tapered cup
  with a handle; kite = pink/white diamond with a tail.
* The verb is decided by where the object is relative to the person and by
  the person's pose:

  pose      cue                                         HICO verbs
  --------  ------------------------------------------  -------------------
  far       arms down, object apart, never touching     no_interaction
  hold      one arm stretched down-out, object at hand  hold
  carry     object before the chest, both arms across   carry + hold
  catch     both arms up, ball between hands overhead   catch
  throw     one arm up, ball beyond the hand + streaks  throw
  kick      one leg raised sideways, ball at that foot  kick
  face      one arm bent to the head, cup at the face   drink_with
  fly       one arm up, kite high up, string to hand    fly + hold
  under     hand up on the handle, umbrella over head   stand_under + hold
  wear      arms down, bag behind torso, chest straps   wear
  stand_on  arms out for balance, feet on the object    stand_on
  sit_on    seated side view (bent legs) on the chair   sit_on
  ride      seated on the bicycle, hands on handlebar   ride

  Which object appears in which pose, and how often, is the `_TEMPLATES`
  table below.

  V-COCO mode maps the same scenes to V-COCO verb classes (e.g. ride ->
  ride_instr + sit_instr, wear -> carry_obj), adds `stand` (object_id -1) to
  every standing person and three person-only scenes: walk (legs in a wide
  inverted V), run (wider stride, one arm forward-up, the other back-down) and
  smile (standing, red mouth arc) -> stand + smile. Some hold/throw/kick/drink
  pairs lose their object (not drawn, object_id -1), so V-COCO scenarios 1
  and 2 differ.

* Frequencies are long-tailed (`_TEMPLATES` weights): with 400 training
  images the most frequent HOI (hold sports_ball) has about 90 instances and
  four to six HOIs have fewer than 10 (rare). The 29 HOIs cover seen and
  unseen classes of every zero-shot split: ride bicycle and wear backpack are
  unseen in 'uv'; stand_on chair in 'rf_uc'; all skateboard HOIs in 'uo';
  17 in 'nf_uc' and 3 in 'uc'.
* Boxes are the tight pixel extents ([x1, y1, x2, y2], inclusive) of each
  drawn person or object (at least 12 px a side); kite strings and motion
  lines belong to no box.

Determinism: image i of a split is drawn from its own generator seeded with
(seed, split, i), PIL draws without anti-aliasing and JPEGs use a fixed
quality, so the same seed gives byte-identical files.
"""

import argparse
import colorsys
import dataclasses
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from ki2hoi_jax.data import metadata

DATASETS = ("hico_det", "vcoco")
_JPEG_QUALITY = 90
_MIN_BOX = 12  # Smallest object side in pixels.
_MIN_PERSON = 32.0  # Smallest person height in pixels (box >= 12 px wide).
_MIN_IMAGE_SIZE = 96  # Smallest supported longest side.
_MARGIN = 2  # Pixels kept free at the image border.
_MISSING_OBJECT_PROB = 0.2  # V-COCO: chance a hold/throw/kick/drink object
# is left out (object_id -1).

# Fixed colours (RGB).
_SKIN = (232, 184, 140)
_SHIRT = (32, 42, 118)
_LEGS = (58, 52, 48)
_MOUTH = (170, 20, 30)
_BLACK = (22, 22, 22)
_WHITE = (245, 245, 245)
_OBJECT_COLOURS = {
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


@dataclasses.dataclass(frozen=True)
class _Template:
  """One visual scene: a pose, an object and the labels it implies."""
  pose: str
  obj: Optional[str]  # None: person-only scene (V-COCO).
  hico_verbs: Tuple[str, ...]
  vcoco_verbs: Tuple[str, ...]
  hico_weight: float  # Relative frequency in HICO-DET mode (0: unused).
  vcoco_weight: float  # Relative frequency in V-COCO mode (0: unused).


_NI = ("no_interaction",)
_HOLD_V = ("hold_obj", "stand")
_CARRY_V = ("carry_obj", "hold_obj", "stand")
_TEMPLATES = (
    _Template("hold", "sports_ball", ("hold",), _HOLD_V, 8, 8),
    _Template("kick", "sports_ball", ("kick",), ("kick_obj",), 9, 8),
    _Template("throw", "sports_ball", ("throw",), ("throw_obj", "stand"), 7, 7),
    _Template("catch", "sports_ball", ("catch",), ("catch_obj", "stand"), 6, 6),
    _Template("carry", "sports_ball", ("carry", "hold"), _CARRY_V, 5, 5),
    _Template("far", "sports_ball", _NI, ("stand",), 6, 3),
    _Template("ride", "bicycle", ("ride",), ("ride_instr", "sit_instr"), 6, 6),
    _Template("hold", "bicycle", ("hold",), _HOLD_V, 0.8, 2),
    _Template("far", "bicycle", _NI, ("stand",), 3, 1.5),
    _Template("stand_on", "skateboard", ("stand_on",),
              ("skateboard_instr", "stand"), 6, 6),
    _Template("carry", "skateboard", ("carry", "hold"), _CARRY_V, 3, 3),
    _Template("far", "skateboard", _NI, ("stand",), 0.8, 1),
    _Template("under", "umbrella", ("stand_under", "hold"), _HOLD_V, 6, 5),
    _Template("far", "umbrella", _NI, ("stand",), 0.8, 1),
    _Template("wear", "backpack", ("wear",), ("carry_obj", "stand"), 5, 4),
    _Template("carry", "backpack", ("carry", "hold"), _CARRY_V, 3, 3),
    _Template("far", "backpack", _NI, ("stand",), 2, 1),
    _Template("sit_on", "chair", ("sit_on",), ("sit_instr",), 6, 6),
    _Template("stand_on", "chair", ("stand_on",), ("stand",), 0.8, 1),
    _Template("far", "chair", _NI, ("stand",), 2.5, 1),
    _Template("face", "cup", ("drink_with",), ("drink_instr", "stand"), 5, 5),
    _Template("hold", "cup", ("hold",), _HOLD_V, 0.8, 2),
    _Template("far", "cup", _NI, ("stand",), 2, 1),
    _Template("fly", "kite", ("fly", "hold"), _HOLD_V, 4, 3),
    _Template("far", "kite", _NI, ("stand",), 0.8, 1),
    _Template("walk", None, (), ("walk",), 0, 5),
    _Template("run", None, (), ("run",), 0, 3),
    _Template("smile", None, (), ("stand", "smile"), 0, 2),
)
_STANDING_POSES = ("far", "hold", "carry", "catch", "throw", "face", "fly",
                   "under", "wear", "stand_on", "smile")
_MAY_LOSE_OBJECT = ("hold", "throw", "kick", "face")


def hoi_subset(dataset: str = "hico_det") -> tuple:
  """The interaction classes the generator can produce.

  Args:
    dataset: 'hico_det' or 'vcoco'.

  Returns:
    HICO-DET: sorted 0-based HOI indices (into `metadata.hico().hois`).
    V-COCO: sorted `(verb_class, object_index)` pairs (object 80 = no object).
  """
  _check_dataset(dataset)
  out = set()
  if dataset == "hico_det":
    meta = metadata.hico()
    for t in _TEMPLATES:
      if t.hico_weight > 0:
        o = meta.objects.index(t.obj)
        out.update(meta.hoi_index(meta.verbs.index(v), o) for v in t.hico_verbs)
    return tuple(sorted(out))
  meta = metadata.vcoco()
  for t in _TEMPLATES:
    if t.vcoco_weight <= 0:
      continue
    for verb in t.vcoco_verbs:
      v = meta.verb_classes.index(verb)
      if not meta.verb_class_role[v] or t.obj is None:
        out.add((v, meta.no_object_index))
      else:
        out.add((v, meta.objects.index(t.obj)))
        if t.pose in _MAY_LOSE_OBJECT:
          out.add((v, meta.no_object_index))
  return tuple(sorted(out))


def _check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


# ----------------------------------------------------------------- drawing
# A primitive is a tuple (kind, geometry, fill, extra, size): geometry is a box
# (x0, y0, x1, y1) or a point list, extra the outline colour (ellipse) or the
# (start, end) angles (chord, arc), size the line width or the corner radius
# (rect). A scene item is (who, primitive) with who in {'p' (person), 'o'
# (object), 'x' (neither, e.g. a kite string or motion lines)}. Coordinates
# are image pixels (y down).

Prim = tuple
Point = Tuple[float, float]


def _ellipse(cx, cy, rx, ry, fill, outline=None, width=1) -> Prim:
  return ("ellipse", (cx - rx, cy - ry, cx + rx, cy + ry), fill, outline, width)


def _rect(x0, y0, x1, y1, fill, radius=0.0) -> Prim:
  return ("rect", (x0, y0, x1, y1), fill, None, radius)


def _line(points: Sequence[Point], fill, width) -> Prim:
  return ("line", tuple(points), fill, None, width)


def _poly(points: Sequence[Point], fill) -> Prim:
  return ("poly", tuple(points), fill, None, 1)


def _chord(box, start, end, fill) -> Prim:
  return ("chord", tuple(box), fill, (start, end), 1)


def _arc(box, start, end, fill, width) -> Prim:
  return ("arc", tuple(box), fill, (start, end), width)


def _w(value: float) -> int:
  """Line width in whole pixels (at least 1)."""
  return max(1, int(round(value)))


def _bounds(prim: Prim) -> Tuple[float, float, float, float]:
  """Approximate pixel extent (x0, y0, x1, y1) of a primitive."""
  kind, geom = prim[0], prim[1]
  if kind in ("line", "poly"):
    half = prim[4] / 2.0 if kind == "line" else 0.0
    xs = [p[0] for p in geom]
    ys = [p[1] for p in geom]
    return min(xs) - half, min(ys) - half, max(xs) + half, max(ys) + half
  return geom


def _render(draw: ImageDraw.ImageDraw, prim: Prim, mask: bool = False) -> None:
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


def _jitter(colour, cj) -> Tuple[int, int, int]:
  return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(colour, cj))


def _object_size(obj: str, p: float) -> Tuple[float, float]:
  rw, rh = _OBJECT_SIZES[obj]
  return max(rw * p, _MIN_BOX), max(rh * p, _MIN_BOX)


def _bike_points(x0, y0, w, h, f) -> Dict[str, Point]:
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


def _draw_object(obj: str, x0: float, y0: float, w: float, h: float, f: int,
                 p: float, cj) -> List[Prim]:
  """Primitives of an object filling the box (x0, y0, w, h); f = facing."""
  c = _jitter(_OBJECT_COLOURS[obj], cj)
  x1, y1, cx, cy = x0 + w, y0 + h, x0 + w / 2, y0 + h / 2
  thin = max(1.0, 0.03 * p)
  if obj == "sports_ball":
    seam = max(1.0, w / 14)
    return [_ellipse(cx, cy, w / 2, h / 2, c),
            _line([(x0 + 1, cy), (x1 - 1, cy)], _BLACK, seam),
            _line([(cx, y0 + 1), (cx, y1 - 1)], _BLACK, seam),
            _arc((x0 - 0.45 * w, y0 + 0.1 * h, cx - 0.05 * w, y1 - 0.1 * h),
                 -60, 60, _BLACK, seam),
            _arc((cx + 0.05 * w, y0 + 0.1 * h, x1 + 0.45 * w, y1 - 0.1 * h),
                 120, 240, _BLACK, seam)]
  if obj == "bicycle":
    k = _bike_points(x0, y0, w, h, f)
    r = k["r"][0]
    tyre = max(2.0, 0.3 * r)
    frame = max(2.0, 0.05 * p)
    prims = [_ellipse(*k["rear"], r, r, None, _BLACK, tyre),
             _ellipse(*k["front"], r, r, None, _BLACK, tyre)]
    prims.append(_line([k["rear"], k["bb"], k["seat"], k["rear"]], c, frame))
    prims.append(_line([k["seat"], k["head"], k["bb"]], c, frame))
    prims.append(_line([k["front"], k["head"], k["bar"]], c, frame))
    sx, sy = k["seat"]
    prims.append(_line([(sx - 0.07 * w, y0 + frame / 2),
                        (sx + 0.07 * w, y0 + frame / 2)], _BLACK, frame))
    prims.append(_line([(sx, y0 + frame / 2), (sx, sy)], c, frame))
    bx, by = k["bar"]
    prims.append(_line([(bx - f * 0.06 * w, by), (bx + f * 0.02 * w, by)],
                       _BLACK, frame))
    return prims
  if obj == "skateboard":
    deck_top, deck_bottom = y0, y0 + 0.55 * h
    wr = 0.25 * h
    return [_rect(x0, deck_top, x1, deck_bottom, c, radius=0.25 * h),
            _ellipse(x0 + 0.22 * w, y1 - wr, wr, wr, _BLACK),
            _ellipse(x1 - 0.22 * w, y1 - wr, wr, wr, _BLACK)]
  if obj == "umbrella":
    ch = 0.45 * h
    prims = [_chord((x0, y0, x1, y0 + 2 * ch), 180, 360, c)]
    for t in (-0.3, 0.0, 0.3):
      prims.append(_line([(cx, y0), (cx + t * w, y0 + ch)], _WHITE, thin))
    hook = max(2.0, 0.05 * p)
    hw = max(2.0, 0.035 * p)
    prims.append(_line([(cx, y0 + ch - 1), (cx, y1 - hook)], _BLACK, hw))
    prims.append(_arc((cx - f * 2 * hook - hook, y1 - 2 * hook,
                       cx - f * 2 * hook + hook, y1), 0, 180, _BLACK, hw))
    return prims
  if obj == "backpack":
    light = _jitter(c, (60, 55, 45))
    return [_rect(x0, y0 + 0.12 * h, x1, y1, c, radius=0.2 * w),
            _arc((cx - 0.22 * w, y0, cx + 0.22 * w, y0 + 0.3 * h), 180, 360,
                 c, max(2.0, 0.08 * w)),
            _rect(x0 + 0.18 * w, y0 + 0.55 * h, x1 - 0.18 * w, y1 - 0.1 * h,
                  light, radius=0.1 * w)]
  if obj == "chair":
    t = max(2.0, 0.05 * p)
    seat = y1 - 0.45 * h
    back_x = cx - f * (w / 2 - t / 2)
    front_x = cx + f * (w / 2 - t / 2)
    return [_line([(back_x, y0), (back_x, y1)], c, t),
            _rect(min(back_x, front_x) - t / 2, seat, max(back_x, front_x)
                  + t / 2, seat + t, c),
            _line([(front_x, seat), (front_x, y1)], c, t),
            _line([(back_x, y0 + 0.12 * h), (back_x + f * 0.22 * w,
                                              y0 + 0.12 * h)], c, t)]
  if obj == "cup":
    body_x1 = x1 - 0.28 * w if f > 0 else x1
    body_x0 = x0 if f > 0 else x0 + 0.28 * w
    bw = body_x1 - body_x0
    hx = body_x1 if f > 0 else body_x0
    ring = max(1.5, 0.09 * w)
    return [_ellipse(hx, cy, 0.28 * w, 0.24 * h, None, c, ring),
            _poly([(body_x0, y0), (body_x1, y0), (body_x1 - 0.15 * bw, y1),
                   (body_x0 + 0.15 * bw, y1)], c),
            _line([(body_x0 + 1, y0 + 1), (body_x1 - 1, y0 + 1)], _WHITE,
                  max(1.0, 0.08 * h))]
  if obj == "kite":
    dh = 0.72 * h
    top, left, bottom, right = ((cx, y0), (x0, y0 + 0.36 * dh),
                                (cx, y0 + dh), (x1, y0 + 0.36 * dh))
    mid = (cx, y0 + 0.36 * dh)
    tail_w = max(1.0, 0.02 * p)
    bow = max(2.0, 0.04 * p)
    ty = [y0 + dh + (y1 - y0 - dh) * t for t in (0.33, 0.66, 1.0)]
    prims = [_poly([top, right, bottom, left], c),
             _poly([top, right, mid], _WHITE),
             _poly([bottom, left, mid], _WHITE),
             _line([top, bottom], _BLACK, tail_w),
             _line([left, right], _BLACK, tail_w),
             _line([bottom, (cx + 0.12 * w, ty[0]), (cx - 0.12 * w, ty[1]),
                    (cx, ty[2])], _BLACK, tail_w)]
    for yy, xx in ((ty[0], cx + 0.12 * w), (ty[1], cx - 0.12 * w)):
      prims.append(_poly([(xx - bow, yy - bow / 2), (xx + bow, yy + bow / 2),
                          (xx + bow, yy - bow / 2), (xx - bow, yy + bow / 2)],
                         c))
    return prims
  raise ValueError(obj)


def _figure(p: float, hip: Point, feet: Sequence[Point],
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
    back.append(_line(pts, _LEGS, leg_w))
  back.append(_rect(hx - 0.11 * p, torso_top, hx + 0.11 * p, hy, _SHIRT,
                    radius=0.03 * p))
  back.append(_ellipse(head_c[0], head_c[1], head_r, head_r, _SKIN))
  if smile:
    back.append(_arc((head_c[0] - 0.05 * p, head_c[1] - 0.04 * p,
                      head_c[0] + 0.05 * p, head_c[1] + 0.055 * p), 25, 155,
                     _MOUTH, max(1.0, 0.02 * p)))
  for i in range(2):
    shoulder = (hx + (2 * i - 1) * 0.10 * p, torso_top + 0.04 * p)
    pts = [shoulder] + ([elbows[i]] if elbows[i] else []) + [hands[i]]
    (front if i in front_arms else back).append(_line(pts, _SKIN, arm_w))
  return back, front


def _group_items(pose: str, obj: Optional[str], p: float, s: int, f: int,
                 u: np.ndarray, cj, ox: float, oy: float,
                 draw_object: bool = True) -> List[Tuple[str, Prim]]:
  """All primitives of one person(+object) group, in drawing order.

  Args:
    pose: template pose.
    obj: object name or None.
    p: person standing height in pixels.
    s: side (+1 right, -1 left) on which the interaction happens.
    f: facing of side-view objects placed freely (+-1).
    u: [4] uniform numbers in [0, 1) for placement variations.
    cj: [3] colour jitter of the object.
    ox, oy: anchor: x of the person's centre and y of the ground line.
    draw_object: False drops the object (V-COCO missing role object).

  Returns:
    list of (who, primitive), who in 'p', 'o', 'x'.
  """
  def pt(a: float, b: float) -> Point:  # Relative coordinates: b = height.
    return (ox + a * p, oy - b * p)

  sid = 1 if s > 0 else 0  # Index of the arm/leg on side s.
  stand_feet = [pt(-0.075, 0), pt(0.075, 0)]
  down = [pt(-0.17, 0.46), pt(0.17, 0.46)]
  hip = pt(0, 0.46)
  w, h = _object_size(obj, p) if obj else (0.0, 0.0)
  items: List[Tuple[str, Prim]] = []
  obj_prims: List[Prim] = []
  back: List[Prim] = []
  front: List[Prim] = []
  extra: List[Prim] = []
  obj_first = False  # Object behind the person.

  def place(x0, y0, facing=f):
    return _draw_object(obj, x0, y0, w, h, facing, p, cj)

  if pose in ("far", "smile"):
    back, front = _figure(p, hip, stand_feet, down, smile=pose == "smile")
    if obj:
      gap = (0.22 + 0.35 * u[0]) * p
      near = ox + s * (0.2 * p + gap)
      x0 = near if s > 0 else near - w
      if obj == "kite":
        y1 = oy - (1.05 + 0.25 * u[1]) * p
        obj_prims = place(x0, y1 - h)
      else:
        obj_prims = place(x0, oy - h)
  elif pose == "hold":
    hands = list(down)
    hands[sid] = pt(s * 0.33, 0.52)
    back, front = _figure(p, hip, stand_feet, hands)
    hx, hy = hands[sid]
    if obj == "bicycle":
      k = _bike_points(0, 0, w, h, -s)
      x0 = hx - k["bar"][0] + s * 0.02 * w
      obj_prims = place(x0, oy - h, facing=-s)
    elif obj:
      cx = hx + s * 0.3 * w
      obj_prims = place(cx - w / 2, hy - h / 2)
  elif pose == "carry":
    elbows = [pt(-0.19, 0.58), pt(0.19, 0.58)]
    hands = [pt(0.03, 0.62), pt(-0.03, 0.62)]
    back, front = _figure(p, hip, stand_feet, hands, elbows=elbows,
                          front_arms=(0, 1))
    cy = oy - 0.64 * p
    obj_prims = place(ox - w / 2, cy - h / 2)
  elif pose == "catch":
    hx = w / 2 + 0.03 * p
    hands = [(ox - hx, oy - 1.1 * p), (ox + hx, oy - 1.1 * p)]
    back, front = _figure(p, hip, stand_feet, hands)
    cy = oy - 1.1 * p - 0.1 * w
    obj_prims = place(ox - w / 2, cy - h / 2)
  elif pose == "throw":
    hands = list(down)
    hands[sid] = pt(s * 0.27, 1.05)
    back, front = _figure(p, hip, stand_feet, hands)
    sh = pt(s * 0.10, 0.78)
    hx, hy = hands[sid]
    dx, dy = hx - sh[0], hy - sh[1]
    norm = math.hypot(dx, dy)
    dx, dy = dx / norm, dy / norm
    dist = w / 2 + 0.14 * p
    cx, cy = hx + dx * dist, hy + dy * dist
    obj_prims = place(cx - w / 2, cy - h / 2)
    for off in (-0.05, 0.0, 0.05):
      ax, ay = hx - dy * off * p, hy + dx * off * p
      extra.append(_line([(ax + dx * 0.03 * p, ay + dy * 0.03 * p),
                          (ax + dx * (dist - w / 2 - 0.02 * p),
                           ay + dy * (dist - w / 2 - 0.02 * p))],
                         _BLACK, 1))
  elif pose == "kick":
    feet = [pt(-s * 0.05, 0), pt(-s * 0.05, 0)]
    feet[sid] = pt(s * 0.34, 0.16)
    hands = list(down)
    hands[1 - sid] = pt(-s * 0.28, 0.62)
    back, front = _figure(p, hip, feet, hands)
    fx, fy = feet[sid]
    cx = fx + s * 0.45 * w
    cy = min(fy, oy - h / 2)
    obj_prims = place(cx - w / 2, cy - h / 2)
  elif pose == "face":
    hands = list(down)
    hands[sid] = pt(s * 0.11, 0.85)
    elbows = [None, None]
    elbows[sid] = pt(s * 0.24, 0.60)
    back, front = _figure(p, hip, stand_feet, hands, elbows=elbows)
    near = ox + s * 0.075 * p
    x0 = near if s > 0 else near - w
    obj_prims = place(x0, oy - 0.86 * p - h / 2, facing=s)
    hx, hy = hands[sid]
    r = max(1.0, 0.035 * p)
    front.append(_ellipse(hx, hy, r, r, _SKIN))
  elif pose == "fly":
    hands = list(down)
    hands[sid] = pt(s * 0.22, 1.07)
    back, front = _figure(p, hip, stand_feet, hands)
    kx = ox + s * (0.45 + 0.3 * u[0]) * p
    y1 = oy - (1.1 + 0.15 * u[1]) * p
    obj_prims = place(kx - w / 2, y1 - h)
    extra.append(_line([hands[sid], (kx, y1 - h + 0.72 * h)], _BLACK, 1))
  elif pose == "under":
    hands = list(down)
    hands[sid] = pt(s * 0.15, 1.0)
    elbows = [None, None]
    elbows[sid] = pt(s * 0.25, 0.82)
    back, front = _figure(p, hip, stand_feet, hands, elbows=elbows)
    hx = hands[sid][0]
    obj_prims = place(hx - w / 2, oy - 0.95 * p - h, facing=s)
  elif pose == "wear":
    back, front = _figure(p, hip, stand_feet, down)
    cx = ox + s * 0.12 * p
    obj_prims = place(cx - w / 2, oy - 0.63 * p - h / 2)
    obj_first = True
    strap = max(2.0, 0.035 * p)
    strap_c = _jitter(_OBJECT_COLOURS["backpack"], (-25, -60, -30))
    for a in (-0.06, 0.06):
      extra.append(_line([pt(a, 0.81), pt(a * 1.2, 0.5)], strap_c, strap))
  elif pose == "stand_on":
    if obj == "chair":
      ground = oy - 0.45 * h
    else:
      ground = oy - h + 1
    obj_prims = place(ox - w / 2, oy - h)
    q = lambda a, b: (ox + a * p, ground - b * p)
    back, front = _figure(p, q(0, 0.46), [q(-0.075, 0), q(0.075, 0)],
                          [q(-0.33, 0.74), q(0.33, 0.74)])
    obj_first = True
  elif pose == "sit_on":
    obj_prims = place(ox - w / 2, oy - h, facing=s)
    seat = oy - 0.45 * h
    hip_s = (ox - s * 0.04 * p, seat)
    knee = (ox + s * 0.24 * p, seat - 0.02 * p)
    foot = (ox + s * 0.3 * p, oy)
    hand = (ox + s * 0.2 * p, seat - 0.07 * p)
    back, front = _figure(p, hip_s, [foot, foot], [hand, hand],
                          knees=[knee, knee])
    obj_first = True
  elif pose == "ride":
    x0 = ox - w / 2
    obj_prims = place(x0, oy - h, facing=s)
    k = _bike_points(x0, oy - h, w, h, s)
    sx, sy = k["seat"]
    hip_r = (sx, oy - h)
    knee = (sx + s * 0.17 * p, oy - h + 0.12 * p)
    foot = (k["bb"][0] + s * 0.03 * p, k["bb"][1])
    back, front = _figure(p, hip_r, [foot, foot], [k["bar"], k["bar"]],
                          knees=[knee, knee])
    obj_first = True
  elif pose == "walk":
    back, front = _figure(p, hip, [pt(-0.17, 0), pt(0.17, 0)], down)
  elif pose == "run":
    feet = [None, None]
    feet[sid], feet[1 - sid] = pt(s * 0.26, 0.06), pt(-s * 0.24, 0)
    hands = [None, None]
    hands[sid], hands[1 - sid] = pt(s * 0.28, 0.98), pt(-s * 0.3, 0.56)
    back, front = _figure(p, pt(0, 0.44), feet, hands)
  else:
    raise ValueError(f"unknown pose {pose!r}")

  if not draw_object:
    obj_prims = []
    extra = []
  if obj_first:
    items += [("o", q_) for q_ in obj_prims]
    items += [("p", q_) for q_ in back]
  else:
    items += [("p", q_) for q_ in back]
    items += [("o", q_) for q_ in obj_prims]
  items += [("p", q_) for q_ in front]
  who = "o" if pose == "wear" else "x"
  items += [(who, q_) for q_ in extra]
  return items


def _extent(items) -> Tuple[float, float, float, float]:
  b = np.array([_bounds(prim) for _, prim in items], np.float64)
  return b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()


def _background(rng: np.random.Generator, width: int,
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


def _image_size(rng: np.random.Generator, size: int) -> Tuple[int, int]:
  aspect = rng.uniform(0.75, 4 / 3)  # width / height
  if aspect >= 1:
    return size, int(round(size / aspect))
  return int(round(size * aspect)), size


def _sample_image(rng: np.random.Generator, image_size: int, dataset: str):
  """Draws one image.

  Returns:
    (image [H, W, 3] uint8, groups): groups is a list of dicts with keys
    'template', 'person_box', 'object_box' (None when no object is drawn).
  """
  width, height = _image_size(rng, image_size)
  weights = np.array([t.hico_weight if dataset == "hico_det" else
                      t.vcoco_weight for t in _TEMPLATES], np.float64)
  n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
  groups = []
  for _ in range(n):
    t = _TEMPLATES[int(rng.choice(len(_TEMPLATES), p=weights / weights.sum()))]
    draw_object = t.obj is not None
    if (dataset == "vcoco" and t.pose in _MAY_LOSE_OBJECT
        and rng.uniform() < _MISSING_OBJECT_PROB):
      draw_object = False
    groups.append(dict(
        template=t, s=int(rng.choice([-1, 1])), f=int(rng.choice([-1, 1])),
        u=rng.uniform(size=4), cj=rng.integers(-12, 13, size=3),
        scale=rng.uniform(0.9, 1.1), draw_object=draw_object))
  p0 = rng.uniform(0.42, 0.62) * height
  p_min = max(_MIN_PERSON, 0.3 * min(width, height))

  def build(g, p, ox=0.0, oy=0.0):
    t = g["template"]
    return _group_items(t.pose, t.obj, max(p * g["scale"], _MIN_PERSON),
                        g["s"], g["f"], g["u"], g["cj"], ox, oy,
                        g["draw_object"])

  p = p0
  while True:
    exts = [_extent(build(g, p)) for g in groups]
    total_w = (sum(e[2] - e[0] + 1 for e in exts)
               + _MARGIN * 2 * (len(groups) + 1))
    max_h = max(e[3] - e[1] + 1 for e in exts) + 2 * _MARGIN + 2
    if total_w <= width and max_h <= height:
      break
    p *= 0.93
    if p < p_min:
      if len(groups) > 1:
        groups.pop()
        p = p0
      elif p < _MIN_PERSON / 2:
        raise ValueError(f"image_size {image_size} is too small")
  free = width - total_w
  gaps = rng.dirichlet(np.ones(len(groups) + 1)) * free
  x = _MARGIN * 2 + gaps[0]
  items = []
  for i, (g, e) in enumerate(zip(groups, exts)):
    ox = x - e[0]
    lo = _MARGIN + 1 - e[1]
    hi = height - 1 - _MARGIN - 1 - e[3]
    # Bias the ground line towards the lower part of the image.
    oy = lo + (hi - lo) * (1 - rng.uniform() ** 2) if hi > lo else lo
    items.append(build(g, p, ox, oy))
    x += e[2] - e[0] + 1 + _MARGIN * 2 + gaps[i + 1]

  bg = _background(rng, width, height)
  img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  out_groups = []
  for g, group_items in zip(groups, items):
    boxes = {}
    for who in ("p", "o"):
      prims = [prim for w_, prim in group_items if w_ == who]
      if not prims:
        boxes[who] = None
        continue
      mask = Image.new("L", (width, height), 0)
      md = ImageDraw.Draw(mask)
      for prim in prims:
        _render(md, prim, mask=True)
      l, t_, r, b = mask.getbbox()
      boxes[who] = [int(l), int(t_), int(r) - 1, int(b) - 1]
    for _, prim in group_items:
      _render(draw, prim)
    out_groups.append(dict(template=g["template"], person_box=boxes["p"],
                           object_box=boxes["o"]))
  pixels = np.asarray(img, np.float32)
  pixels += rng.normal(0, rng.uniform(3, 8), size=pixels.shape)
  return pixels.clip(0, 255).round().astype(np.uint8), out_groups


def _hico_record(groups, file_name: str, img_id: int) -> dict:
  meta = metadata.hico()
  annotations, hois = [], []
  for g in groups:
    t = g["template"]
    sub = len(annotations)
    annotations.append({"bbox": g["person_box"], "category_id": 1})
    o = meta.objects.index(t.obj)
    obj = len(annotations)
    annotations.append({"bbox": g["object_box"],
                        "category_id": meta.coco_category_ids[o]})
    for verb in t.hico_verbs:
      v = meta.verbs.index(verb)
      hois.append({"subject_id": sub, "object_id": obj, "category_id": v + 1,
                   "hoi_category_id": meta.hoi_index(v, o) + 1})
  return {"file_name": file_name, "img_id": img_id, "annotations": annotations,
          "hoi_annotation": hois}


def _vcoco_record(groups, file_name: str, img_id: int) -> dict:
  meta = metadata.vcoco()
  annotations, hois = [], []
  for g in groups:
    t = g["template"]
    sub = len(annotations)
    annotations.append({"bbox": g["person_box"], "category_id": 1})
    obj = -1
    if g["object_box"] is not None:
      obj = len(annotations)
      o = meta.objects.index(t.obj)
      annotations.append({"bbox": g["object_box"],
                          "category_id": meta.coco_category_ids[o]})
    for verb in t.vcoco_verbs:
      v = meta.verb_classes.index(verb)
      oid = obj if meta.verb_class_role[v] else -1
      hois.append({"subject_id": sub, "object_id": oid, "category_id": v})
  return {"file_name": file_name, "img_id": img_id, "annotations": annotations,
          "hoi_annotation": hois}


_LAYOUT = {
    "hico_det": dict(
        folders=("train2015", "test2015"),
        files=("trainval_hico.json", "test_hico.json"),
        prior="corre_hico.npy",
        names=("HICO_train2015_{:08d}.jpg", "HICO_test2015_{:08d}.jpg")),
    "vcoco": dict(
        folders=("train2014", "val2014"),
        files=("trainval_vcoco.json", "test_vcoco.json"),
        prior="corre_vcoco.npy",
        names=("COCO_train2014_{:012d}.jpg", "COCO_val2014_{:012d}.jpg")),
}


def generate(out_dir: str, num_train: int, num_test: int, seed: int = 0,
             image_size: int = 256, dataset: str = "hico_det") -> dict:
  """Writes a synthetic dataset in the HICO-DET (or V-COCO) file layout.

  Args:
    out_dir: dataset root; `images/` and `annotations/` are created in it.
    num_train: number of training images.
    num_test: number of test images.
    seed: random seed; equal seeds give byte-identical files.
    image_size: longest image side in pixels (>= 96).
    dataset: 'hico_det' or 'vcoco'.

  Returns:
    Summary: {'dataset', 'root', 'train_images', 'test_images', 'train_pairs',
    'test_pairs', 'train_boxes', 'test_boxes', 'train_class_counts',
    'test_class_counts'}; pairs count hoi_annotation entries and class counts
    map the HOI id (HICO-DET, 1-based) or verb class (V-COCO, 0-based) to its
    number of entries.
  """
  _check_dataset(dataset)
  if image_size < _MIN_IMAGE_SIZE:
    raise ValueError(f"image_size must be >= {_MIN_IMAGE_SIZE}, got "
                     f"{image_size}")
  layout = _LAYOUT[dataset]
  ann_dir = os.path.join(out_dir, "annotations")
  os.makedirs(ann_dir, exist_ok=True)
  summary = {"dataset": dataset, "root": out_dir}
  record_fn = _hico_record if dataset == "hico_det" else _vcoco_record
  next_id = 1
  for split_id, (split, count) in enumerate((("train", num_train),
                                             ("test", num_test))):
    img_dir = os.path.join(out_dir, "images", layout["folders"][split_id])
    os.makedirs(img_dir, exist_ok=True)
    records = []
    class_counts: Dict[int, int] = {}
    num_boxes = 0
    for i in range(count):
      # HICO numbers each split from 1; COCO ids are unique across splits.
      img_id = i + 1 if dataset == "hico_det" else next_id
      next_id += 1
      rng = np.random.default_rng([seed, split_id, i])
      pixels, groups = _sample_image(rng, image_size, dataset)
      name = layout["names"][split_id].format(img_id)
      Image.fromarray(pixels).save(os.path.join(img_dir, name), "JPEG",
                                   quality=_JPEG_QUALITY)
      rec = record_fn(groups, name, img_id)
      records.append(rec)
      num_boxes += len(rec["annotations"])
      key = "hoi_category_id" if dataset == "hico_det" else "category_id"
      for h in rec["hoi_annotation"]:
        class_counts[h[key]] = class_counts.get(h[key], 0) + 1
    with open(os.path.join(ann_dir, layout["files"][split_id]), "w") as fp:
      json.dump(records, fp)
    summary[f"{split}_images"] = count
    summary[f"{split}_pairs"] = sum(len(r["hoi_annotation"]) for r in records)
    summary[f"{split}_boxes"] = num_boxes
    summary[f"{split}_class_counts"] = dict(sorted(class_counts.items()))
  if dataset == "hico_det":
    prior = metadata.hico().verb_object_matrix()
  else:
    prior = metadata.vcoco().verb_object_matrix()[:, :80]
  np.save(os.path.join(ann_dir, layout["prior"]), prior)
  return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="dataset root to write")
  parser.add_argument("--num_train", type=int, default=400)
  parser.add_argument("--num_test", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--dataset", choices=DATASETS, default="hico_det")
  args = parser.parse_args(argv)
  summary = generate(args.out, args.num_train, args.num_test, args.seed,
                     args.image_size, args.dataset)
  short = {k: v for k, v in summary.items() if not k.endswith("class_counts")}
  short["train_classes"] = len(summary["train_class_counts"])
  short["test_classes"] = len(summary["test_class_counts"])
  print(json.dumps(short))


if __name__ == "__main__":
  main()
