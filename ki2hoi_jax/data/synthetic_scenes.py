"""Visual grammar of the synthetic datasets: what one image shows.

Owns the scene templates (pose, object, HICO-DET and V-COCO labels, relative
frequencies), `hoi_subset` and the sampling of one image (`sample_image`:
groups, placement, background, noise, boxes). Where the limbs and the object
of each pose go is synthetic_poses.py; the parts are drawn with
synthetic_shapes.py; the dataset writer is synthetic.py.

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
  drawn person or object (at least 12 px a side); kite strings, reins,
  leashes, sponges, water drops and motion lines belong to no box.

World 'compositional'
---------------------
All of the above describes world 'basic', the default. World
'compositional' (`world='compositional'`, HICO-DET mode only; table
`_COMPOSITIONAL`, described with its zero-shot relatives in
docs/synthetic_world.md) drops the umbrella, adds 7 objects (frisbee,
motorcycle, horse, dog, bench, handbag, bottle: synthetic_objects.py) and
draws 64 HOIs in which most verbs go with several objects (ride a bicycle, a
motorcycle, a horse, a skateboard; throw, catch, hold, spin a ball and a
frisbee) and most objects with several verbs. Existing poses serve the new
objects (ride/perch/hold on a motorcycle, ride on a horse -> ride +
straddle, sit_on a bench or a skateboard); new poses add the verbs:

  pose      cue                                         HICO verbs
  --------  ------------------------------------------  -------------------
  dribble   hand down-out, ball below it near the       dribble
            ground, vertical bounce lines between
  spin      one arm straight up, object on the          spin
            fingertip, two spin arcs around it
  lead      walking stride (legs apart), a vehicle by   walk + push + hold
            its handlebar / an animal on a line from    walk
            the hand to its head (rein, leash)
  wash      arm out to the object's middle, yellow      wash
            sponge at the hand, blue drops below
  hop_on    at a mount's rear, one leg raised with the  hop_on
            foot on the seat, a hand on the bar
  skate     one foot on the board, the other pushing    ride + stand_on
            off the ground, motion lines behind

As in HICO-DET, whose images were collected per HOI category, the groups
of one image share their object: the first group's template is drawn by
weight, the others among the templates of its object (again by weight), so
each group's template still has the frequency of its weight. A zero-shot
filter that removes an unseen object's pairs thus leaves its images empty
(they are dropped) instead of leaving that object unlabelled beside seen
pairs, where the detector would learn it as background.

Its weights give about 14-16 rare HOIs (< 10 instances in 400 training
images) and about 35 instances for the most frequent; for each zero-shot
setting it draws at least 6 unseen HOIs, each with a seen relative
(`zero_shot_relatives`).
"""

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_poses as poses
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


def _hico_only(pose: str, obj: str, hico_verbs: Tuple[str, ...],
               weight: float) -> _Template:
  return _Template(pose, obj, hico_verbs, (), weight, 0)


_WALK_V = ("walk", "push", "hold")  # Walking a vehicle by its handlebar.
# World 'compositional' (HICO-DET mode only): 14 objects, most verbs with
# several objects and most objects with several verbs (module docstring).
_COMPOSITIONAL = (
    _hico_only("hold", "sports_ball", ("hold",), 5),
    _hico_only("kick", "sports_ball", ("kick",), 4),
    _hico_only("throw", "sports_ball", ("throw",), 3.5),
    _hico_only("catch", "sports_ball", ("catch",), 3),
    _hico_only("carry", "sports_ball", ("carry", "hold"), 2),
    _hico_only("dribble", "sports_ball", ("dribble",), 2.5),
    _hico_only("spin", "sports_ball", ("spin",), 0.5),
    _hico_only("far", "sports_ball", _NI, 2.5),
    _hico_only("throw", "frisbee", ("throw",), 3),
    _hico_only("catch", "frisbee", ("catch",), 3),
    _hico_only("hold", "frisbee", ("hold",), 2.3),
    _hico_only("spin", "frisbee", ("spin",), 0.7),
    _hico_only("far", "frisbee", _NI, 2.2),
    _hico_only("ride", "bicycle", ("ride",), 4),
    _hico_only("perch", "bicycle", ("sit_on",), 2.3),
    _hico_only("lead", "bicycle", _WALK_V, 2.3),
    _hico_only("hold", "bicycle", ("hold",), 2.2),
    _hico_only("hop_on", "bicycle", ("hop_on",), 2.2),
    _hico_only("wash", "bicycle", ("wash",), 0.5),
    _hico_only("far", "bicycle", _NI, 2.3),
    _hico_only("ride", "motorcycle", ("ride",), 3.5),
    _hico_only("perch", "motorcycle", ("sit_on",), 2.3),
    _hico_only("lead", "motorcycle", _WALK_V, 2.2),
    _hico_only("hold", "motorcycle", ("hold",), 2.2),
    _hico_only("hop_on", "motorcycle", ("hop_on",), 0.5),
    _hico_only("wash", "motorcycle", ("wash",), 0.5),
    _hico_only("far", "motorcycle", _NI, 2.2),
    _hico_only("ride", "horse", ("ride", "straddle"), 3.5),
    _hico_only("lead", "horse", ("walk",), 2.3),
    _hico_only("wash", "horse", ("wash",), 2.2),
    _hico_only("hop_on", "horse", ("hop_on",), 0.5),
    _hico_only("far", "horse", _NI, 2.2),
    _hico_only("lead", "dog", ("walk",), 3),
    _hico_only("far", "dog", _NI, 2.2),
    _hico_only("stand_on", "skateboard", ("stand_on",), 2.5),
    _hico_only("skate", "skateboard", ("ride", "stand_on"), 3),
    _hico_only("carry", "skateboard", ("carry", "hold"), 2.3),
    _hico_only("sit_on", "skateboard", ("sit_on",), 0.6),
    _hico_only("far", "skateboard", _NI, 2.2),
    _hico_only("sit_on", "chair", ("sit_on",), 3),
    _hico_only("stand_on", "chair", ("stand_on",), 0.5),
    _hico_only("far", "chair", _NI, 2.2),
    _hico_only("sit_on", "bench", ("sit_on",), 3),
    _hico_only("far", "bench", _NI, 2.2),
    _hico_only("wear", "backpack", ("wear",), 3),
    _hico_only("sling", "backpack", ("carry", "hold"), 2.3),
    _hico_only("carry", "backpack", ("carry", "hold"), 2.3),
    _hico_only("far", "backpack", _NI, 2.2),
    _hico_only("hold", "handbag", ("hold",), 2),
    _hico_only("carry", "handbag", ("carry", "hold"), 2.3),
    _hico_only("far", "handbag", _NI, 2.2),
    _hico_only("face", "cup", ("drink_with",), 3),
    _hico_only("hold", "cup", ("hold",), 2.2),
    _hico_only("far", "cup", _NI, 2.2),
    _hico_only("face", "bottle", ("drink_with",), 2),
    _hico_only("hold", "bottle", ("hold",), 2),
    _hico_only("far", "bottle", _NI, 2.2),
    _hico_only("fly", "kite", ("fly", "hold"), 3),
    _hico_only("far", "kite", _NI, 2.2),
)
WORLDS = ("basic", "compositional")
# Worlds whose images show one object class each, as HICO-DET's, which were
# collected per HOI category (module docstring).
ONE_OBJECT_PER_IMAGE = ("compositional",)
_WORLD_TEMPLATES = {"basic": _TEMPLATES, "compositional": _COMPOSITIONAL}
_MAY_LOSE_OBJECT = ("hold", "throw", "kick", "face")


def hoi_subset(dataset: str = "hico_det", world: str = "basic") -> tuple:
  """The interaction classes the generator can produce.

  Args:
    dataset: 'hico_det' or 'vcoco'.
    world: 'basic' or 'compositional' (HICO-DET only).

  Returns:
    HICO-DET: sorted 0-based HOI indices (into `metadata.hico().hois`).
    V-COCO: sorted `(verb_class, object_index)` pairs (object 80 = no object).
  """
  table = templates(dataset, world)
  out = set()
  if dataset == "hico_det":
    meta = metadata.hico()
    for t in table:
      if t.hico_weight > 0:
        o = meta.objects.index(t.obj)
        out.update(meta.hoi_index(meta.verbs.index(v), o) for v in t.hico_verbs)
    return tuple(sorted(out))
  meta = metadata.vcoco()
  for t in table:
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


def templates(dataset: str, world: str) -> Tuple[_Template, ...]:
  """The scene templates of `world`; raises ValueError for unknown names."""
  check_dataset(dataset)
  if world not in WORLDS:
    raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
  if dataset == "vcoco" and world != "basic":
    raise ValueError(f"world {world!r} has no V-COCO labels; use 'basic'")
  return _WORLD_TEMPLATES[world]


def zero_shot_relatives(world: str = "compositional") -> dict:
  """Per zero-shot setting, the drawn unseen HOIs and their seen relatives.

  A relative is a drawn HOI that is seen in the setting and shares the
  unseen HOI's verb or object: its verb in 'uo' (whose unseen HOIs are those
  of unseen objects), its object in 'uv' (unseen verbs).

  Args:
    world: 'basic' or 'compositional'.

  Returns:
    {setting: {unseen HOI index: sorted tuple of relative HOI indices}} for
    the settings `metadata.ZERO_SHOT_SPLITS`, HOI indices 0-based.
  """
  meta = metadata.hico()
  drawn = set(hoi_subset("hico_det", world))
  out = {}
  for split in metadata.ZERO_SHOT_SPLITS:
    unseen = set(meta.unseen_hois(split))
    seen = sorted(drawn - unseen)
    share_verb, share_object = split != "uv", split != "uo"
    out[split] = {
        h: tuple(r for r in seen
                 if (share_verb and meta.hoi_verb[r] == meta.hoi_verb[h])
                 or (share_object and meta.hoi_object[r] == meta.hoi_object[h]))
        for h in sorted(drawn & unseen)}
  return out


def balanced_test_split(world: str) -> bool:
  """Whether the dataset writer draws `world`'s test images balanced.

  World 'compositional' draws its test images with every template equally
  likely (`sample_image(balanced=True)`), its training images by the
  long-tailed weights: every HOI, the rare ones included, gets enough test
  pairs for its AP (each zero-shot setting has >= 6 unseen HOIs, some of
  them rare in training). The rare / non-rare split stays the training
  split's (< 10 training instances), as in HICO-DET. World 'basic' draws
  both splits by the weights.
  """
  if world not in WORLDS:
    raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
  return world != "basic"


def check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _extent(items) -> Tuple[float, float, float, float]:
  b = np.array([shapes.bounds(prim) for _, prim in items], np.float64)
  return b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()


def _image_size(rng: np.random.Generator, size: int) -> Tuple[int, int]:
  aspect = rng.uniform(0.75, 4 / 3)  # width / height
  if aspect >= 1:
    return size, int(round(size / aspect))
  return int(round(size * aspect)), size


def _sample_groups(rng: np.random.Generator, dataset: str, world: str,
                   balanced: bool) -> List[dict]:
  """1-3 groups: template, side, facing, variations, jitter and scale."""
  table = templates(dataset, world)
  weights = np.array([t.hico_weight if dataset == "hico_det" else
                      t.vcoco_weight for t in table], np.float64)
  if balanced:
    weights = (weights > 0).astype(np.float64)
  n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
  groups = []
  for k in range(n):
    if k and world in ONE_OBJECT_PER_IMAGE:  # Another of the first's object.
      weights = weights * [t.obj == groups[0]["template"].obj for t in table]
    t = table[int(rng.choice(len(table), p=weights / weights.sum()))]
    draw_object = t.obj is not None
    if (dataset == "vcoco" and t.pose in _MAY_LOSE_OBJECT
        and rng.uniform() < _MISSING_OBJECT_PROB):
      draw_object = False
    groups.append(dict(
        template=t, s=int(rng.choice([-1, 1])), f=int(rng.choice([-1, 1])),
        u=rng.uniform(size=4), cj=rng.integers(-12, 13, size=3),
        scale=rng.uniform(0.9, 1.1), draw_object=draw_object))
  return groups


def _build(g: dict, p: float, ox: float = 0.0, oy: float = 0.0):
  """The items of sampled group `g` for person height p at anchor (ox, oy)."""
  t = g["template"]
  return poses.group_items(t.pose, t.obj, max(p * g["scale"], _MIN_PERSON),
                           g["s"], g["f"], g["u"], g["cj"], ox, oy,
                           g["draw_object"])


def _fit(groups: List[dict], p0: float, width: int, height: int,
         image_size: int):
  """Shrinks the person height from p0 (dropping groups) until all fit.

  Returns:
    (person height, extents of the groups at the origin, total width with
    margins); `groups` loses the groups that did not fit.
  """
  p_min = max(_MIN_PERSON, 0.3 * min(width, height))
  p = p0
  while True:
    exts = [_extent(_build(g, p)) for g in groups]
    total_w = (sum(e[2] - e[0] + 1 for e in exts)
               + _MARGIN * 2 * (len(groups) + 1))
    max_h = max(e[3] - e[1] + 1 for e in exts) + 2 * _MARGIN + 2
    if total_w <= width and max_h <= height:
      return p, exts, total_w
    p *= 0.93
    if p < p_min:
      if len(groups) > 1:
        groups.pop()
        p = p0
      elif p < _MIN_PERSON / 2:
        raise ValueError(f"image_size {image_size} is too small")


def _group_boxes(group_items, width: int, height: int) -> dict:
  """{'p': person box, 'o': object box or None}: tight inclusive xyxy."""
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
  return boxes


def sample_image(rng: np.random.Generator, image_size: int, dataset: str,
                 world: str = "basic", balanced: bool = False):
  """Draws one image.

  Args:
    rng: the image's random generator.
    image_size: longest image side in pixels.
    dataset: 'hico_det' or 'vcoco'.
    world: 'basic' or 'compositional' (HICO-DET only).
    balanced: draw every template of the world equally often instead of by
      its weight (`balanced_test_split`).

  Returns:
    (image [H, W, 3] uint8, groups): groups is a list of dicts with keys
    'template', 'person_box', 'object_box' (None when no object is drawn).
  """
  width, height = _image_size(rng, image_size)
  groups = _sample_groups(rng, dataset, world, balanced)
  p0 = rng.uniform(0.42, 0.62) * height
  p, exts, total_w = _fit(groups, p0, width, height, image_size)
  gaps = rng.dirichlet(np.ones(len(groups) + 1)) * (width - total_w)
  x = _MARGIN * 2 + gaps[0]
  items = []
  for i, (g, e) in enumerate(zip(groups, exts)):
    ox = x - e[0]
    lo = _MARGIN + 1 - e[1]
    hi = height - 1 - _MARGIN - 1 - e[3]
    # Bias the ground line towards the lower part of the image.
    oy = lo + (hi - lo) * (1 - rng.uniform() ** 2) if hi > lo else lo
    items.append(_build(g, p, ox, oy))
    x += e[2] - e[0] + 1 + _MARGIN * 2 + gaps[i + 1]

  bg = shapes.background(rng, width, height)
  img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  out_groups = []
  for g, group_items in zip(groups, items):
    boxes = _group_boxes(group_items, width, height)
    for _, prim in group_items:
      shapes.render(draw, prim)
    out_groups.append(dict(template=g["template"], person_box=boxes["p"],
                           object_box=boxes["o"]))
  pixels = np.asarray(img, np.float32)
  pixels += rng.normal(0, rng.uniform(3, 8), size=pixels.shape)
  return pixels.clip(0, 255).round().astype(np.uint8), out_groups
