"""Objects of the compositional synthetic world, and all objects' key points.

synthetic_shapes.py draws the 8 objects of the basic world; this module adds
the 7 objects that only the compositional world draws (synthetic_scenes.py,
world 'compositional'), each a distinct silhouette and colour:

  frisbee = flat white disc with a red rim; motorcycle = two thick black
  tyres under a blue tank and a black seat, silver exhaust; horse = chestnut
  side-view horse (body, long neck, black mane and tail, four legs); dog =
  small sandy side-view dog (short legs, dark ear, raised tail); bench =
  slate-grey bench with two backrest slats; handbag = tan trapezoid with a
  black handle loop; bottle = pale blue bottle with a narrow neck and a white
  cap.

`draw_object`, `object_size` and `mount_points` cover every object, old and
new, and are what synthetic_poses.py calls.
"""

from typing import Dict, List

from ki2hoi_jax.data import synthetic_shapes as shapes
from ki2hoi_jax.data.synthetic_shapes import BLACK, WHITE, Point, Prim
from ki2hoi_jax.data.synthetic_shapes import arc, chord, ellipse, line, poly
from ki2hoi_jax.data.synthetic_shapes import rect

COLOURS = {
    "frisbee": (246, 246, 240),
    "motorcycle": (34, 92, 206),
    "horse": (126, 78, 44),
    "dog": (206, 172, 108),
    "bench": (92, 104, 124),
    "handbag": (214, 152, 64),
    "bottle": (120, 190, 230),
}
# Object size (width, height) in units of the person height P.
_SIZES = {
    "frisbee": (0.26, 0.08),
    "motorcycle": (0.86, 0.52),
    "horse": (0.95, 0.82),
    "dog": (0.42, 0.30),
    "bench": (0.70, 0.55),
    "handbag": (0.24, 0.26),
    "bottle": (0.09, 0.26),
}
_MOUNTS = ("bicycle", "motorcycle", "horse")  # Objects a person sits astride.


def object_size(obj: str, p: float):
  """(width, height) in pixels of `obj` next to a person of height p."""
  if obj not in _SIZES:
    return shapes.object_size(obj, p)
  rw, rh = _SIZES[obj]
  return max(rw * p, shapes.MIN_BOX), max(rh * p, shapes.MIN_BOX)


def _horse_points(x0, y0, w, h, f) -> Dict[str, Point]:
  cx = x0 + w / 2
  seat = (cx - f * 0.06 * w, y0 + 0.30 * h)
  return {
      "seat": seat,
      "hip": seat,
      "bar": (cx + f * 0.24 * w, y0 + 0.30 * h),  # The reins at the withers.
      "bb": (cx - f * 0.02 * w, y0 + 0.66 * h),  # The stirrup.
      "head": (cx + f * 0.40 * w, y0 + 0.10 * h),
  }


def mount_points(obj: str, x0, y0, w, h, f) -> Dict[str, Point]:
  """Key points of a bicycle, motorcycle or horse, where a rider goes.

  'seat', 'bar' (hands), 'bb' (feet) and, for a horse, 'hip' (the rider's
  hip; on a bicycle it is the saddle top above 'seat').

  Args:
    obj: one of 'bicycle', 'motorcycle', 'horse'.
    x0, y0, w, h: the object's box (top-left corner and size, pixels).
    f: facing (+-1): the side its front (handlebar, head) is on.
  """
  if obj not in _MOUNTS:
    raise ValueError(f"{obj!r} cannot be mounted")
  if obj == "horse":
    return _horse_points(x0, y0, w, h, f)
  return shapes.bike_points(x0, y0, w, h, f)


def head_point(obj: str, x0, y0, w, h, f) -> Point:
  """Where a rein or leash meets a horse or dog (its head)."""
  if obj == "horse":
    return _horse_points(x0, y0, w, h, f)["head"]
  return (x0 + w / 2 + f * 0.36 * w, y0 + 0.22 * h)


# One function per object class, as in synthetic_shapes.py.


def _frisbee(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f, p  # Symmetric.
  cx, cy = x0 + w / 2, y0 + h / 2
  rim = (210, 40, 40)
  return [ellipse(cx, cy, w / 2, h / 2, rim),
          ellipse(cx, cy - 0.1 * h, 0.38 * w, 0.3 * h, c)]


def _motorcycle(x0, y0, w, h, f, p, c) -> List[Prim]:
  k = shapes.bike_points(x0, y0, w, h, f)
  r = k["r"][0]
  y1 = y0 + h
  tyre = max(3.0, 0.45 * r)
  frame = max(2.0, 0.05 * p)
  (rx, ry), (fx, fy), (sx, sy) = k["rear"], k["front"], k["seat"]
  tank_x = (sx + k["head"][0]) / 2
  prims = [ellipse(rx, ry, r, r, None, BLACK, tyre),
           ellipse(fx, fy, r, r, None, BLACK, tyre),
           line([(rx, ry), (k["bb"][0], y1 - 0.5 * r)], (190, 190, 196),
                frame),  # Exhaust.
           line([k["head"], (fx, fy)], (190, 190, 196), frame),  # Fork.
           poly([(sx - f * 0.1 * w, sy), (k["head"][0], k["head"][1]),
                 (k["bb"][0] + f * 0.12 * w, y1 - 1.1 * r),
                 (k["bb"][0] - f * 0.12 * w, y1 - 1.1 * r)], c),
           ellipse(tank_x, k["head"][1] + 0.04 * h, 0.13 * w, 0.08 * h, c),
           line([(sx - f * 0.12 * w, y0 + 0.1 * h),
                 (sx + f * 0.08 * w, y0 + 0.1 * h)], BLACK, 0.1 * h),
           line([k["bar"], k["head"]], BLACK, frame)]
  return prims


def _quadruped(x0, y0, w, h, f, p, c, dog: bool) -> List[Prim]:
  """Side-view horse or dog facing f: body, neck, head, legs, tail."""
  cx, y1 = x0 + w / 2, y0 + h
  dark = BLACK if not dog else shapes.jitter(c, (-110, -100, -70))
  leg = max(2.0, (0.05 if dog else 0.045) * p)
  body_top, body_bot = y0 + (0.36 if dog else 0.32) * h, y0 + 0.64 * h
  body_w = 0.34 * w
  prims = []
  for dx in (-0.28, -0.2, 0.2, 0.28):  # Legs.
    lx = cx + f * dx * w
    prims.append(line([(lx, (body_top + body_bot) / 2), (lx, y1 - leg / 2)],
                      shapes.jitter(c, (-25, -20, -15)), leg))
  hx, hy = x0 + w / 2 + f * (0.36 if dog else 0.40) * w, y0 + (
      0.22 if dog else 0.10) * h
  neck = [(cx + f * 0.22 * w, body_top + 0.1 * h), (hx, hy)]
  prims.append(line(neck, c, (0.16 if dog else 0.12) * h))
  prims.append(ellipse(cx, (body_top + body_bot) / 2, body_w,
                       (body_bot - body_top) / 2, c))
  head_rx = (0.1 if dog else 0.1) * w
  prims.append(ellipse(hx + f * 0.05 * w, hy + 0.03 * h, head_rx,
                       (0.1 if dog else 0.07) * h, c))
  tail_root = (cx - f * body_w, body_top + 0.05 * h)
  if dog:
    prims.append(line([tail_root, (tail_root[0] - f * 0.1 * w, y0 + 0.05 * h)],
                      c, leg))
    prims.append(ellipse(hx - f * 0.02 * w, hy + 0.06 * h, 0.04 * w,
                         0.09 * h, dark))  # Ear.
  else:
    prims.append(line([tail_root, (tail_root[0] - f * 0.06 * w, y0 + 0.6 * h)],
                      dark, 2 * leg))
    prims.append(line([(cx + f * 0.2 * w, body_top - 0.02 * h),
                       (hx - f * 0.03 * w, hy - 0.02 * h)], dark, leg))  # Mane.
  return prims


def _horse(x0, y0, w, h, f, p, c) -> List[Prim]:
  return _quadruped(x0, y0, w, h, f, p, c, dog=False)


def _dog(x0, y0, w, h, f, p, c) -> List[Prim]:
  return _quadruped(x0, y0, w, h, f, p, c, dog=True)


def _bench(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f  # Seen from the front.
  x1, y1 = x0 + w, y0 + h
  t = max(2.0, 0.05 * p)
  seat = y1 - 0.45 * h
  return [rect(x0 + 0.08 * w, y0, x0 + 0.08 * w + t, y1, c),
          rect(x1 - 0.08 * w - t, y0, x1 - 0.08 * w, y1, c),
          rect(x0, y0 + 0.06 * h, x1, y0 + 0.06 * h + t, c),
          rect(x0, y0 + 0.26 * h, x1, y0 + 0.26 * h + t, c),
          rect(x0, seat, x1, seat + 1.5 * t, c)]


def _handbag(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f  # Symmetric.
  x1, y1, cx = x0 + w, y0 + h, x0 + w / 2
  body = y0 + 0.4 * h
  return [arc((cx - 0.28 * w, y0, cx + 0.28 * w, body + 0.4 * h), 180, 360,
              BLACK, max(2.0, 0.025 * p)),
          poly([(x0 + 0.12 * w, body), (x1 - 0.12 * w, body), (x1, y1),
                (x0, y1)], c),
          rect(cx - 0.08 * w, body + 0.1 * h, cx + 0.08 * w, body + 0.22 * h,
               BLACK)]


def _bottle(x0, y0, w, h, f, p, c) -> List[Prim]:
  del f, p  # Symmetric; sizes follow the bottle.
  x1, y1, cx = x0 + w, y0 + h, x0 + w / 2
  neck = 0.22 * w
  return [rect(cx - neck, y0, cx + neck, y0 + 0.12 * h, WHITE),
          poly([(cx - neck, y0 + 0.1 * h), (cx + neck, y0 + 0.1 * h),
                (x1, y0 + 0.42 * h), (x0, y0 + 0.42 * h)], c),
          rect(x0, y0 + 0.4 * h, x1, y1, c, radius=0.15 * w),
          chord((x0, y0 + 0.55 * h, x1, y0 + 0.8 * h), 0, 360,
                shapes.jitter(c, (-70, -50, -40)))]


_OBJECTS = {"frisbee": _frisbee, "motorcycle": _motorcycle, "horse": _horse,
            "dog": _dog, "bench": _bench, "handbag": _handbag,
            "bottle": _bottle}


def draw_object(obj: str, x0: float, y0: float, w: float, h: float, f: int,
                p: float, cj) -> List[Prim]:
  """Primitives of any object filling the box (x0, y0, w, h); f = facing."""
  if obj not in _OBJECTS:
    return shapes.draw_object(obj, x0, y0, w, h, f, p, cj)
  return _OBJECTS[obj](x0, y0, w, h, f, p, shapes.jitter(COLOURS[obj], cj))
