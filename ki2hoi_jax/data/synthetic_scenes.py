"""Visual grammar of the synthetic datasets: what one image shows.

Owns the scene templates (pose, object, HICO-DET and V-COCO labels, relative
frequencies), `hoi_subset`, the layout of each pose (where the limbs and the
object go) and the sampling of one image (`sample_image`: groups, placement,
background, noise, boxes). The parts are drawn with synthetic_shapes.py; the
dataset writer is synthetic.py.

Visual grammar
--------------
An image (longest side `image_size`, aspect ratio 3:4 to 4:3) shows 1-3
side-by-side, non-overlapping groups on a textured, noisy background of muted
colours. Each group is one person and (usually) one object and gives one
annotated pair. Everything is flip-invariant: the side (left or right) on
which things happen is random and never decides a label.

* Person and objects look as described in synthetic_shapes.py; the person's
  standing height P is about 40-60 % of the image height.
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
            and feet on the pedals
  perch     seated on the bicycle, hands on handlebar   sit_on
            and both feet down on the ground (at rest)
  sling     bag behind the torso as in wear, one hand   carry + hold
            up at the shoulder on a single strap

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
  four to six HOIs have fewer than 10 (rare). The 30 HOIs cover seen and
  unseen classes of every zero-shot split: ride bicycle and wear backpack are
  unseen in 'uv' (perch and sling are their seen look-alikes: the same
  boxes and layering, another pose); stand_on chair in 'rf_uc'; all
  skateboard HOIs in 'uo'; 17 in 'nf_uc' and 3 in 'uc'.
* Boxes are the tight pixel extents ([x1, y1, x2, y2], inclusive) of each
  drawn person or object (at least 12 px a side); kite strings and motion
  lines belong to no box.
"""

import dataclasses
import math
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_shapes as shapes

DATASETS = ("hico_det", "vcoco")
_MIN_PERSON = 32.0  # Smallest person height in pixels (box >= 12 px wide).
_MARGIN = 2  # Pixels kept free at the image border.
_MISSING_OBJECT_PROB = 0.2  # V-COCO: chance a hold/throw/kick/drink object
# is left out (object_id -1).


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
    # Seen scenes that share the geometry of the unseen 'uv' pairs (a person
    # on a bicycle, a bag behind the torso), as HICO-DET's unseen verbs share
    # theirs with seen ones (sit_on / straddle a bicycle or a motorcycle;
    # carry a bag on the back). HICO-DET only: V-COCO data stay as they were.
    _Template("perch", "bicycle", ("sit_on",), (), 3, 0),
    _Template("sling", "backpack", ("carry", "hold"), (), 3, 0),
)
_MAY_LOSE_OBJECT = ("hold", "throw", "kick", "face")


def hoi_subset(dataset: str = "hico_det") -> tuple:
  """The interaction classes the generator can produce.

  Args:
    dataset: 'hico_det' or 'vcoco'.

  Returns:
    HICO-DET: sorted 0-based HOI indices (into `metadata.hico().hois`).
    V-COCO: sorted `(verb_class, object_index)` pairs (object 80 = no object).
  """
  check_dataset(dataset)
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


def check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _group_items(pose: str, obj: Optional[str], p: float, s: int, f: int,
                 u: np.ndarray, cj, ox: float, oy: float,
                 draw_object: bool = True) -> List[Tuple[str, shapes.Prim]]:
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
  # Relative coordinates: b = height.
  def pt(a: float, b: float) -> shapes.Point:
    return (ox + a * p, oy - b * p)

  sid = 1 if s > 0 else 0  # Index of the arm/leg on side s.
  stand_feet = [pt(-0.075, 0), pt(0.075, 0)]
  down = [pt(-0.17, 0.46), pt(0.17, 0.46)]
  hip = pt(0, 0.46)
  w, h = shapes.object_size(obj, p) if obj else (0.0, 0.0)
  items: List[Tuple[str, shapes.Prim]] = []
  obj_prims: List[shapes.Prim] = []
  back: List[shapes.Prim] = []
  front: List[shapes.Prim] = []
  extra: List[shapes.Prim] = []
  obj_first = False  # Object behind the person.

  def place(x0, y0, facing=f):
    return shapes.draw_object(obj, x0, y0, w, h, facing, p, cj)

  if pose in ("far", "smile"):
    back, front = shapes.figure(p, hip, stand_feet, down, smile=pose == "smile")
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
    back, front = shapes.figure(p, hip, stand_feet, hands)
    hx, hy = hands[sid]
    if obj == "bicycle":
      k = shapes.bike_points(0, 0, w, h, -s)
      x0 = hx - k["bar"][0] + s * 0.02 * w
      obj_prims = place(x0, oy - h, facing=-s)
    elif obj:
      cx = hx + s * 0.3 * w
      obj_prims = place(cx - w / 2, hy - h / 2)
  elif pose == "carry":
    elbows = [pt(-0.19, 0.58), pt(0.19, 0.58)]
    hands = [pt(0.03, 0.62), pt(-0.03, 0.62)]
    back, front = shapes.figure(p, hip, stand_feet, hands, elbows=elbows,
                                front_arms=(0, 1))
    cy = oy - 0.64 * p
    obj_prims = place(ox - w / 2, cy - h / 2)
  elif pose == "catch":
    hx = w / 2 + 0.03 * p
    hands = [(ox - hx, oy - 1.1 * p), (ox + hx, oy - 1.1 * p)]
    back, front = shapes.figure(p, hip, stand_feet, hands)
    cy = oy - 1.1 * p - 0.1 * w
    obj_prims = place(ox - w / 2, cy - h / 2)
  elif pose == "throw":
    hands = list(down)
    hands[sid] = pt(s * 0.27, 1.05)
    back, front = shapes.figure(p, hip, stand_feet, hands)
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
      extra.append(shapes.line([(ax + dx * 0.03 * p, ay + dy * 0.03 * p),
                                (ax + dx * (dist - w / 2 - 0.02 * p),
                                 ay + dy * (dist - w / 2 - 0.02 * p))],
                               shapes.BLACK, 1))
  elif pose == "kick":
    feet = [pt(-s * 0.05, 0), pt(-s * 0.05, 0)]
    feet[sid] = pt(s * 0.34, 0.16)
    hands = list(down)
    hands[1 - sid] = pt(-s * 0.28, 0.62)
    back, front = shapes.figure(p, hip, feet, hands)
    fx, fy = feet[sid]
    cx = fx + s * 0.45 * w
    cy = min(fy, oy - h / 2)
    obj_prims = place(cx - w / 2, cy - h / 2)
  elif pose == "face":
    hands = list(down)
    hands[sid] = pt(s * 0.11, 0.85)
    elbows = [None, None]
    elbows[sid] = pt(s * 0.24, 0.60)
    back, front = shapes.figure(p, hip, stand_feet, hands, elbows=elbows)
    near = ox + s * 0.075 * p
    x0 = near if s > 0 else near - w
    obj_prims = place(x0, oy - 0.86 * p - h / 2, facing=s)
    hx, hy = hands[sid]
    r = max(1.0, 0.035 * p)
    front.append(shapes.ellipse(hx, hy, r, r, shapes.SKIN))
  elif pose == "fly":
    hands = list(down)
    hands[sid] = pt(s * 0.22, 1.07)
    back, front = shapes.figure(p, hip, stand_feet, hands)
    kx = ox + s * (0.45 + 0.3 * u[0]) * p
    y1 = oy - (1.1 + 0.15 * u[1]) * p
    obj_prims = place(kx - w / 2, y1 - h)
    extra.append(shapes.line([hands[sid], (kx, y1 - h + 0.72 * h)],
                             shapes.BLACK, 1))
  elif pose == "under":
    hands = list(down)
    hands[sid] = pt(s * 0.15, 1.0)
    elbows = [None, None]
    elbows[sid] = pt(s * 0.25, 0.82)
    back, front = shapes.figure(p, hip, stand_feet, hands, elbows=elbows)
    hx = hands[sid][0]
    obj_prims = place(hx - w / 2, oy - 0.95 * p - h, facing=s)
  elif pose == "wear":
    back, front = shapes.figure(p, hip, stand_feet, down)
    cx = ox + s * 0.12 * p
    obj_prims = place(cx - w / 2, oy - 0.63 * p - h / 2)
    obj_first = True
    strap = max(2.0, 0.035 * p)
    strap_c = shapes.jitter(shapes.OBJECT_COLOURS["backpack"], (-25, -60, -30))
    for a in (-0.06, 0.06):
      extra.append(shapes.line([pt(a, 0.81), pt(a * 1.2, 0.5)], strap_c, strap))
  elif pose == "stand_on":
    if obj == "chair":
      ground = oy - 0.45 * h
    else:
      ground = oy - h + 1
    obj_prims = place(ox - w / 2, oy - h)
    q = lambda a, b: (ox + a * p, ground - b * p)
    back, front = shapes.figure(p, q(0, 0.46), [q(-0.075, 0), q(0.075, 0)],
                                [q(-0.33, 0.74), q(0.33, 0.74)])
    obj_first = True
  elif pose == "sit_on":
    obj_prims = place(ox - w / 2, oy - h, facing=s)
    seat = oy - 0.45 * h
    hip_s = (ox - s * 0.04 * p, seat)
    knee = (ox + s * 0.24 * p, seat - 0.02 * p)
    foot = (ox + s * 0.3 * p, oy)
    hand = (ox + s * 0.2 * p, seat - 0.07 * p)
    back, front = shapes.figure(p, hip_s, [foot, foot], [hand, hand],
                                knees=[knee, knee])
    obj_first = True
  elif pose == "ride":
    x0 = ox - w / 2
    obj_prims = place(x0, oy - h, facing=s)
    k = shapes.bike_points(x0, oy - h, w, h, s)
    sx, sy = k["seat"]
    hip_r = (sx, oy - h)
    knee = (sx + s * 0.17 * p, oy - h + 0.12 * p)
    foot = (k["bb"][0] + s * 0.03 * p, k["bb"][1])
    back, front = shapes.figure(p, hip_r, [foot, foot],
                                [k["bar"], k["bar"]], knees=[knee, knee])
    obj_first = True
  elif pose == "perch":
    x0 = ox - w / 2
    obj_prims = place(x0, oy - h, facing=s)
    k = shapes.bike_points(x0, oy - h, w, h, s)
    sx, _ = k["seat"]
    feet = [(sx + s * 0.04 * p, oy), (sx + s * 0.1 * p, oy)]
    back, front = shapes.figure(p, (sx, oy - h), feet, [k["bar"], k["bar"]])
    obj_first = True
  elif pose == "sling":
    hands = list(down)
    hands[sid] = pt(s * 0.09, 0.84)
    elbows = [None, None]
    elbows[sid] = pt(s * 0.24, 0.66)
    back, front = shapes.figure(p, hip, stand_feet, hands, elbows=elbows)
    cx, cy = ox + s * 0.12 * p, oy - 0.63 * p
    obj_prims = place(cx - w / 2, cy - h / 2)
    obj_first = True
    strap = max(2.0, 0.035 * p)
    strap_c = shapes.jitter(shapes.OBJECT_COLOURS["backpack"], (-25, -60, -30))
    extra.append(shapes.line([hands[sid], (cx, cy - h / 2)], strap_c, strap))
  elif pose == "walk":
    back, front = shapes.figure(p, hip, [pt(-0.17, 0), pt(0.17, 0)], down)
  elif pose == "run":
    feet = [None, None]
    feet[sid], feet[1 - sid] = pt(s * 0.26, 0.06), pt(-s * 0.24, 0)
    hands = [None, None]
    hands[sid], hands[1 - sid] = pt(s * 0.28, 0.98), pt(-s * 0.3, 0.56)
    back, front = shapes.figure(p, pt(0, 0.44), feet, hands)
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
  who = "o" if pose in ("wear", "sling") else "x"
  items += [(who, q_) for q_ in extra]
  return items


def _extent(items) -> Tuple[float, float, float, float]:
  b = np.array([shapes.bounds(prim) for _, prim in items], np.float64)
  return b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()


def _image_size(rng: np.random.Generator, size: int) -> Tuple[int, int]:
  aspect = rng.uniform(0.75, 4 / 3)  # width / height
  if aspect >= 1:
    return size, int(round(size / aspect))
  return int(round(size * aspect)), size


def sample_image(rng: np.random.Generator, image_size: int, dataset: str):
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

  bg = shapes.background(rng, width, height)
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
        shapes.render(md, prim, mask=True)
      l, t_, r, b = mask.getbbox()
      boxes[who] = [int(l), int(t_), int(r) - 1, int(b) - 1]
    for _, prim in group_items:
      shapes.render(draw, prim)
    out_groups.append(dict(template=g["template"], person_box=boxes["p"],
                           object_box=boxes["o"]))
  pixels = np.asarray(img, np.float32)
  pixels += rng.normal(0, rng.uniform(3, 8), size=pixels.shape)
  return pixels.clip(0, 255).round().astype(np.uint8), out_groups
