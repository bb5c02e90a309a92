"""Layout of each pose of the synthetic datasets: limbs and object place.

`group_items` turns one group of a scene (a pose, an object, the person's
height, side and anchor) into the primitives of synthetic_shapes.py, in
drawing order, each tagged with whom its pixels belong to (person, object or
neither). Each pose has one function below; the cue each pose shows and the
labels it implies are described in synthetic_scenes.py, which samples the
groups of an image and places them.
"""

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import synthetic_objects as objects
from ki2hoi_jax.data import synthetic_shapes as shapes


class _Group:
  """Geometry of one person(+object) group while its primitives are built.

  Attributes:
    obj: object name or None.
    p: person standing height in pixels.
    s: side (+1 right, -1 left) on which the interaction happens.
    sid: index (0 left, 1 right) of the arm/leg on side s.
    f: facing of side-view objects placed freely (+-1).
    u: [4] uniform numbers in [0, 1) for placement variations.
    cj: [3] colour jitter of the object.
    ox, oy: anchor: x of the person's centre and y of the ground line.
    w, h: object size in pixels (0 without an object).
  """

  def __init__(self, obj: Optional[str], p: float, s: int, f: int,
               u: np.ndarray, cj, ox: float, oy: float):
    self.obj, self.p, self.s, self.f, self.u, self.cj = obj, p, s, f, u, cj
    self.ox, self.oy = ox, oy
    self.sid = 1 if s > 0 else 0
    self.w, self.h = objects.object_size(obj, p) if obj else (0.0, 0.0)

  def pt(self, a: float, b: float) -> shapes.Point:
    """The point `a` person heights right of the anchor, `b` above it."""
    return (self.ox + a * self.p, self.oy - b * self.p)

  def place(self, x0: float, y0: float, facing: Optional[int] = None
            ) -> List[shapes.Prim]:
    """The object drawn in the box with top-left corner (x0, y0)."""
    return objects.draw_object(self.obj, x0, y0, self.w, self.h,
                               self.f if facing is None else facing, self.p,
                               self.cj)

  def arms_down(self) -> List[shapes.Point]:
    return [self.pt(-0.17, 0.46), self.pt(0.17, 0.46)]

  def one_arm(self, hand: shapes.Point) -> List[shapes.Point]:
    """Hands: the one on side s at `hand`, the other down."""
    hands = self.arms_down()
    hands[self.sid] = hand
    return hands

  def one_elbow(self, elbow: shapes.Point) -> List[Optional[shapes.Point]]:
    """Elbows: the arm on side s bent at `elbow`, the other straight."""
    elbows = [None, None]
    elbows[self.sid] = elbow
    return elbows


@dataclasses.dataclass
class _Parts:
  """Primitives of one group by role, before they are put in drawing order.

  Attributes:
    back: person parts drawn before the object (or after it: `obj_first`).
    front: person parts drawn over the object (e.g. arms around it).
    obj: the object.
    extra: lines that follow the object (kite string, motion lines, straps).
    extra_owner: who `extra` belongs to: 'o' (object box) or 'x' (no box).
    obj_first: the object is behind the person.
  """
  back: List[shapes.Prim]
  front: List[shapes.Prim]
  obj: List[shapes.Prim] = dataclasses.field(default_factory=list)
  extra: List[shapes.Prim] = dataclasses.field(default_factory=list)
  extra_owner: str = "x"
  obj_first: bool = False


def _standing(g: _Group, hands: Sequence[shapes.Point], **kwargs):
  """(back, front) of a person standing on the ground line, feet together."""
  return shapes.figure(g.p, g.pt(0, 0.46), [g.pt(-0.075, 0), g.pt(0.075, 0)],
                       hands, **kwargs)


def _strap(g: _Group, points: Sequence[shapes.Point]) -> shapes.Prim:
  """A backpack strap through `points`."""
  colour = shapes.jitter(shapes.OBJECT_COLOURS["backpack"], (-25, -60, -30))
  return shapes.line(points, colour, max(2.0, 0.035 * g.p))


# ------------------------------------------------------------- poses
# One function per pose: the person's limbs and where the object goes.

_VEHICLES = ("bicycle", "motorcycle")  # Handlebar objects.
_WATER = (70, 140, 235)
_SPONGE = (250, 220, 60)


def _far(g: _Group, smile: bool = False) -> _Parts:
  parts = _Parts(*_standing(g, g.arms_down(), smile=smile))
  if g.obj:
    gap = (0.22 + 0.35 * g.u[0]) * g.p
    near = g.ox + g.s * (0.2 * g.p + gap)
    x0 = near if g.s > 0 else near - g.w
    if g.obj == "kite":
      y1 = g.oy - (1.05 + 0.25 * g.u[1]) * g.p
      parts.obj = g.place(x0, y1 - g.h)
    else:
      parts.obj = g.place(x0, g.oy - g.h)
  return parts


def _smile(g: _Group) -> _Parts:
  return _far(g, smile=True)


def _hold(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.33, 0.52))
  parts = _Parts(*_standing(g, hands))
  hx, hy = hands[g.sid]
  if g.obj in _VEHICLES:
    parts.obj = _by_handlebar(g, hx)
  elif g.obj == "handbag":  # Hangs from the hand by its handle.
    parts.obj = g.place(hx - g.w / 2, hy - 0.08 * g.h)
  elif g.obj:
    cx = hx + g.s * 0.3 * g.w
    parts.obj = g.place(cx - g.w / 2, hy - g.h / 2)
  return parts


def _by_handlebar(g: _Group, hx: float) -> List[shapes.Prim]:
  """A bicycle or motorcycle on the ground, handlebar at hand x `hx`."""
  k = objects.mount_points(g.obj, 0, 0, g.w, g.h, -g.s)
  x0 = hx - k["bar"][0] + g.s * 0.02 * g.w
  return g.place(x0, g.oy - g.h, facing=-g.s)


def _carry(g: _Group) -> _Parts:
  elbows = [g.pt(-0.19, 0.58), g.pt(0.19, 0.58)]
  hands = [g.pt(0.03, 0.62), g.pt(-0.03, 0.62)]
  back, front = _standing(g, hands, elbows=elbows, front_arms=(0, 1))
  cy = g.oy - 0.64 * g.p
  return _Parts(back, front, g.place(g.ox - g.w / 2, cy - g.h / 2))


def _catch(g: _Group) -> _Parts:
  p, ox, oy = g.p, g.ox, g.oy
  hx = g.w / 2 + 0.03 * p
  hands = [(ox - hx, oy - 1.1 * p), (ox + hx, oy - 1.1 * p)]
  back, front = _standing(g, hands)
  cy = oy - 1.1 * p - 0.1 * g.w
  return _Parts(back, front, g.place(ox - g.w / 2, cy - g.h / 2))


def _throw(g: _Group) -> _Parts:
  p, w = g.p, g.w
  hands = g.one_arm(g.pt(g.s * 0.27, 1.05))
  parts = _Parts(*_standing(g, hands))
  sh = g.pt(g.s * 0.10, 0.78)
  hx, hy = hands[g.sid]
  dx, dy = hx - sh[0], hy - sh[1]
  norm = math.hypot(dx, dy)
  dx, dy = dx / norm, dy / norm
  dist = w / 2 + 0.14 * p
  cx, cy = hx + dx * dist, hy + dy * dist
  parts.obj = g.place(cx - w / 2, cy - g.h / 2)
  for off in (-0.05, 0.0, 0.05):  # Motion lines between hand and ball.
    ax, ay = hx - dy * off * p, hy + dx * off * p
    parts.extra.append(shapes.line(
        [(ax + dx * 0.03 * p, ay + dy * 0.03 * p),
         (ax + dx * (dist - w / 2 - 0.02 * p),
          ay + dy * (dist - w / 2 - 0.02 * p))], shapes.BLACK, 1))
  return parts


def _kick(g: _Group) -> _Parts:
  s, sid = g.s, g.sid
  feet = [g.pt(-s * 0.05, 0), g.pt(-s * 0.05, 0)]
  feet[sid] = g.pt(s * 0.34, 0.16)
  hands = g.arms_down()
  hands[1 - sid] = g.pt(-s * 0.28, 0.62)
  back, front = shapes.figure(g.p, g.pt(0, 0.46), feet, hands)
  fx, fy = feet[sid]
  cx = fx + s * 0.45 * g.w
  cy = min(fy, g.oy - g.h / 2)
  return _Parts(back, front, g.place(cx - g.w / 2, cy - g.h / 2))


def _face(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.11, 0.85))
  back, front = _standing(g, hands, elbows=g.one_elbow(g.pt(g.s * 0.24,
                                                            0.60)))
  near = g.ox + g.s * 0.075 * g.p
  x0 = near if g.s > 0 else near - g.w
  parts = _Parts(back, front,
                 g.place(x0, g.oy - 0.86 * g.p - g.h / 2, facing=g.s))
  hx, hy = hands[g.sid]
  r = max(1.0, 0.035 * g.p)
  parts.front.append(shapes.ellipse(hx, hy, r, r, shapes.SKIN))  # The hand.
  return parts


def _fly(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.22, 1.07))
  parts = _Parts(*_standing(g, hands))
  kx = g.ox + g.s * (0.45 + 0.3 * g.u[0]) * g.p
  y1 = g.oy - (1.1 + 0.15 * g.u[1]) * g.p
  parts.obj = g.place(kx - g.w / 2, y1 - g.h)
  parts.extra.append(shapes.line([hands[g.sid], (kx, y1 - g.h + 0.72 * g.h)],
                                 shapes.BLACK, 1))  # The kite string.
  return parts


def _under(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.15, 1.0))
  back, front = _standing(g, hands, elbows=g.one_elbow(g.pt(g.s * 0.25,
                                                            0.82)))
  hx = hands[g.sid][0]
  return _Parts(back, front, g.place(hx - g.w / 2, g.oy - 0.95 * g.p - g.h,
                                     facing=g.s))


def _wear(g: _Group) -> _Parts:
  parts = _Parts(*_standing(g, g.arms_down()), extra_owner="o",
                 obj_first=True)
  cx = g.ox + g.s * 0.12 * g.p
  parts.obj = g.place(cx - g.w / 2, g.oy - 0.63 * g.p - g.h / 2)
  for a in (-0.06, 0.06):
    parts.extra.append(_strap(g, [g.pt(a, 0.81), g.pt(a * 1.2, 0.5)]))
  return parts


def _sling(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.09, 0.84))
  back, front = _standing(g, hands, elbows=g.one_elbow(g.pt(g.s * 0.24,
                                                            0.66)))
  cx, cy = g.ox + g.s * 0.12 * g.p, g.oy - 0.63 * g.p
  return _Parts(back, front, g.place(cx - g.w / 2, cy - g.h / 2),
                [_strap(g, [hands[g.sid], (cx, cy - g.h / 2)])],
                extra_owner="o", obj_first=True)


def _stand_on(g: _Group) -> _Parts:
  p, ox = g.p, g.ox
  ground = g.oy - 0.45 * g.h if g.obj == "chair" else g.oy - g.h + 1
  q = lambda a, b: (ox + a * p, ground - b * p)
  back, front = shapes.figure(p, q(0, 0.46), [q(-0.075, 0), q(0.075, 0)],
                              [q(-0.33, 0.74), q(0.33, 0.74)])
  return _Parts(back, front, g.place(ox - g.w / 2, g.oy - g.h),
                obj_first=True)


def _sit_on(g: _Group) -> _Parts:
  p, s, ox, oy = g.p, g.s, g.ox, g.oy
  obj = g.place(ox - g.w / 2, oy - g.h, facing=s)
  seat = oy - 0.45 * g.h
  hip = (ox - s * 0.04 * p, seat)
  knee = (ox + s * 0.24 * p, seat - 0.02 * p)
  foot = (ox + s * 0.3 * p, oy)
  hand = (ox + s * 0.2 * p, seat - 0.07 * p)
  back, front = shapes.figure(p, hip, [foot, foot], [hand, hand],
                              knees=[knee, knee])
  return _Parts(back, front, obj, obj_first=True)


def _on_bicycle(g: _Group, feet: str) -> _Parts:
  """Astride a bicycle, motorcycle or horse; feet: 'pedals' | 'ground'."""
  p, s, oy, h = g.p, g.s, g.oy, g.h
  x0 = g.ox - g.w / 2
  obj = g.place(x0, oy - h, facing=s)
  k = objects.mount_points(g.obj, x0, oy - h, g.w, h, s)
  sx, _ = k["seat"]
  hip = k.get("hip", (sx, oy - h))  # Bicycles: the hip on the saddle top.
  if feet == "pedals":  # Pedals, footrests or stirrups.
    knee = (sx + s * 0.17 * p, hip[1] + 0.12 * p)
    foot = (k["bb"][0] + s * 0.03 * p, k["bb"][1])
    legs = dict(feet=[foot, foot], knees=[knee, knee])
  else:
    legs = dict(feet=[(sx + s * 0.04 * p, oy), (sx + s * 0.1 * p, oy)])
  back, front = shapes.figure(p, hip, hands=[k["bar"], k["bar"]], **legs)
  return _Parts(back, front, obj, obj_first=True)


def _ride(g: _Group) -> _Parts:
  return _on_bicycle(g, feet="pedals")


def _perch(g: _Group) -> _Parts:
  return _on_bicycle(g, feet="ground")


def _walk(g: _Group) -> _Parts:
  return _Parts(*shapes.figure(g.p, g.pt(0, 0.46),
                               [g.pt(-0.17, 0), g.pt(0.17, 0)],
                               g.arms_down()))


def _run(g: _Group) -> _Parts:
  s, sid = g.s, g.sid
  feet, hands = [None, None], [None, None]
  feet[sid], feet[1 - sid] = g.pt(s * 0.26, 0.06), g.pt(-s * 0.24, 0)
  hands[sid], hands[1 - sid] = g.pt(s * 0.28, 0.98), g.pt(-s * 0.3, 0.56)
  return _Parts(*shapes.figure(g.p, g.pt(0, 0.44), feet, hands))


# Poses of the compositional world only (synthetic_scenes.py).


def _dribble(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.3, 0.5))
  parts = _Parts(*_standing(g, hands))
  hx, hy = hands[g.sid]
  cx, y0 = hx + g.s * 0.03 * g.p, g.oy - 0.03 * g.p - g.h
  parts.obj = g.place(cx - g.w / 2, y0)
  for off in (-0.15, 0.0, 0.15):  # Bounce lines between hand and ball.
    x = cx + off * g.w
    parts.extra.append(shapes.line([(x, hy + 0.05 * g.p),
                                    (x, y0 - 0.03 * g.p)], shapes.BLACK, 1))
  return parts


def _spin(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.12, 1.12))
  parts = _Parts(*_standing(g, hands))
  hx, hy = hands[g.sid]
  cy = hy - 0.02 * g.p - g.h / 2
  parts.obj = g.place(hx - g.w / 2, cy - g.h / 2)
  rx, ry = 0.75 * g.w, 0.5 * g.h + 0.08 * g.p
  for start in (200, 20):  # Spin arcs around the object.
    parts.extra.append(shapes.arc((hx - rx, cy - ry, hx + rx, cy + ry), start,
                                  start + 120, shapes.BLACK, 1))
  return parts


def _lead(g: _Group) -> _Parts:
  """Walking (legs apart), a vehicle by the handlebar or an animal on a line."""
  hands = g.one_arm(g.pt(g.s * 0.31, 0.5))
  parts = _Parts(*shapes.figure(g.p, g.pt(0, 0.46),
                                [g.pt(-0.17, 0), g.pt(0.17, 0)], hands))
  hx, hy = hands[g.sid]
  if g.obj in _VEHICLES:
    parts.obj = _by_handlebar(g, hx)
    return parts
  near = hx + g.s * (0.12 + 0.1 * g.u[0]) * g.p
  x0 = near if g.s > 0 else near - g.w
  parts.obj = g.place(x0, g.oy - g.h, facing=g.s)
  head = objects.head_point(g.obj, x0, g.oy - g.h, g.w, g.h, g.s)
  parts.extra.append(shapes.line([(hx, hy), head], shapes.BLACK,
                                 max(1.0, 0.012 * g.p)))  # Rein or leash.
  return parts


def _wash(g: _Group) -> _Parts:
  hands = g.one_arm(g.pt(g.s * 0.36, 0.38))
  parts = _Parts(*_standing(g, hands))
  hx, hy = hands[g.sid]
  near = g.ox + g.s * 0.26 * g.p
  x0 = near if g.s > 0 else near - g.w
  parts.obj = g.place(x0, g.oy - g.h, facing=g.f)
  r = 0.05 * g.p
  parts.front.append(shapes.rect(hx - r, hy - 0.7 * r, hx + r, hy + 0.7 * r,
                                 _SPONGE, radius=0.3 * r))
  for i, dy in enumerate((0.08, 0.16, 0.24)):  # Water drops.
    x = hx + (i - 1) * 0.6 * r
    parts.extra.append(shapes.ellipse(x, hy + dy * g.p, 0.35 * r, 0.5 * r,
                                      _WATER))
  return parts


def _hop_on(g: _Group) -> _Parts:
  """Beside a mount's rear, one leg raised over the seat, a hand on the bar."""
  p, s = g.p, g.s
  k0 = objects.mount_points(g.obj, 0, 0, g.w, g.h, s)
  x0 = g.ox + s * 0.34 * p - k0["seat"][0]
  parts = _Parts([], [], g.place(x0, g.oy - g.h, facing=s), obj_first=True)
  sx, sy = x0 + k0["seat"][0], g.oy - g.h + k0["seat"][1]
  hands = g.one_arm((x0 + k0["bar"][0], g.oy - g.h + k0["bar"][1]))
  feet, knees = [None, None], [None, None]
  feet[1 - g.sid] = g.pt(-s * 0.05, 0)
  feet[g.sid] = (sx, sy - 0.03 * p)
  knees[g.sid] = (g.ox + s * 0.2 * p, min(sy - 0.12 * p, g.oy - 0.64 * p))
  parts.back, parts.front = shapes.figure(p, g.pt(0, 0.46), feet, hands,
                                          knees=knees)
  return parts


def _skate(g: _Group) -> _Parts:
  """One foot on the moving board, the other pushing off the ground."""
  p, s = g.p, g.s
  cx = g.ox + s * 0.1 * p
  board_top = g.oy - g.h + 1
  feet = [None, None]
  feet[g.sid] = (cx + s * 0.05 * p, board_top)
  feet[1 - g.sid] = g.pt(-s * 0.2, 0)
  back, front = shapes.figure(p, g.pt(0, 0.5), feet,
                              [g.pt(-0.3, 0.72), g.pt(0.3, 0.72)])
  parts = _Parts(back, front, g.place(cx - g.w / 2, g.oy - g.h),
                 obj_first=True)
  tail = cx - s * (g.w / 2 + 0.04 * p)
  for dy in (0.02, 0.07, 0.12):  # Motion lines behind the board.
    y = g.oy - dy * p
    parts.extra.append(shapes.line([(tail, y), (tail - s * 0.16 * p, y)],
                                   shapes.BLACK, 1))
  return parts


_POSES = {
    "far": _far, "smile": _smile, "hold": _hold, "carry": _carry,
    "catch": _catch, "throw": _throw, "kick": _kick, "face": _face,
    "fly": _fly, "under": _under, "wear": _wear, "sling": _sling,
    "stand_on": _stand_on, "sit_on": _sit_on, "ride": _ride,
    "perch": _perch, "walk": _walk, "run": _run, "dribble": _dribble,
    "spin": _spin, "lead": _lead, "wash": _wash, "hop_on": _hop_on,
    "skate": _skate,
}


def group_items(pose: str, obj: Optional[str], p: float, s: int, f: int,
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
  if pose not in _POSES:
    raise ValueError(f"unknown pose {pose!r}")
  parts = _POSES[pose](_Group(obj, p, s, f, u, cj, ox, oy))
  if not draw_object:
    parts.obj, parts.extra = [], []
  person = [("p", q) for q in parts.back]
  thing = [("o", q) for q in parts.obj]
  items = thing + person if parts.obj_first else person + thing
  items += [("p", q) for q in parts.front]
  return items + [(parts.extra_owner, q) for q in parts.extra]
