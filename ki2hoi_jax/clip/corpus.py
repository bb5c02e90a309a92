"""The synthetic "web corpus" of CLIP pretraining: captioned renderer crops.

Image i of seed s is `synthetic_scenes.sample_image(default_rng([s, split,
i]))` with `split` = `WEB_SPLIT` (training corpus) or `HELD_OUT_SPLIT`
(held-out crops of the accuracy figure); the HICO-format writer
(data/synthetic.py) uses split ids 0 (train) and 1 (test), so the corpus
never contains a detector training or test image. Each image gives
* one crop around each human-object pair (their union box, 10 % margin, made
  square), captioned with each of the pair's HOI prompts
  (`metadata.hoi_prompt`) and verb prompts (`metadata.verb_prompt`), in a
  detector's `model.prompt_style`;
* one crop of each object, captioned with its object prompt;
* the whole scene, as the detector's CLIP branch sees it (short side resized,
  centre crop), captioned with the prompts of all its pairs.
The corpus covers every HOI the renderer can draw, including those unseen in
each zero-shot split (clip/pretrain.py explains why).
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image
import tqdm

from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes

WEB_SPLIT = 2  # Seed-sequence split id of the corpus (writer: 0, 1).
HELD_OUT_SPLIT = 3  # Split id of the held-out crops of the accuracy figure.
_CLIP_MEAN = np.asarray((0.48145466, 0.4578275, 0.40821073), np.float32)
_CLIP_STD = np.asarray((0.26862954, 0.26130258, 0.27577711), np.float32)
_MARGIN = 0.1  # Crop margin around a box, as a fraction of its larger side.


@dataclasses.dataclass
class Corpus:
  """Captioned images.

  Attributes:
    images: [N, S, S, 3] uint8.
    kinds: [N] 'pair' | 'object' | 'scene'.
    captions: the distinct captions, C of them.
    targets: [N, C] bool, True where caption c describes image n.
    hoi: [N] int, the pair's HOI index in `renderer_hois()` (-1 if none).
    obj: [N] int, the object's index in `renderer_objects()` (-1 if none).
  """
  images: np.ndarray
  kinds: np.ndarray
  captions: List[str]
  targets: np.ndarray
  hoi: np.ndarray
  obj: np.ndarray


def renderer_hois(world: str = "basic") -> List[Tuple[str, str]]:
  """(verb, object) of every HOI the renderer draws (HICO-DET mode)."""
  meta = metadata.hico()
  out = []
  for h in synthetic_scenes.hoi_subset("hico_det", world):
    v, o = meta.hois[h]
    out.append((meta.verbs[v], meta.objects[o]))
  return out


def renderer_objects(world: str = "basic") -> List[str]:
  """The object classes the renderer draws."""
  return sorted({o for _, o in renderer_hois(world)})


def square_crop(pixels: np.ndarray, box: Sequence[float], size: int
                 ) -> np.ndarray:
  """A square crop around a box (margin, clipped at the border), resized."""
  h, w = pixels.shape[:2]
  x1, y1, x2, y2 = box
  side = max(x2 - x1, y2 - y1) * (1 + 2 * _MARGIN) + 1
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  left = int(np.clip(round(cx - side / 2), 0, max(0, w - side)))
  top = int(np.clip(round(cy - side / 2), 0, max(0, h - side)))
  right, bottom = min(w, left + int(side)), min(h, top + int(side))
  crop = Image.fromarray(pixels[top:bottom, left:right])
  return np.asarray(crop.resize((size, size), Image.BICUBIC))


def _scene_view(pixels: np.ndarray, size: int) -> np.ndarray:
  """Short side resized to `size`, centre crop (the detector's CLIP view)."""
  h, w = pixels.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image = Image.fromarray(pixels).resize((nw, nh), Image.BICUBIC)
  top, left = (nh - size) // 2, (nw - size) // 2
  return np.asarray(image)[top:top + size, left:left + size]


def union_box(a: Sequence[float], b: Sequence[float]
              ) -> Tuple[float, float, float, float]:
  """The smallest box holding boxes a and b (x1, y1, x2, y2)."""
  return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def pair_captions(verbs: Sequence[str], obj: str,
                  prompt_style: str = "gerund") -> List[str]:
  """The HOI and verb prompts of a pair with these verbs."""
  return ([metadata.hoi_prompt(v, obj, prompt_style) for v in verbs]
          + [metadata.verb_prompt(v, prompt_style) for v in verbs])


def web_corpus(seed: int, split: int, num_images: int, image_size: int,
               crop_size: int, progress: bool = False,
               prompt_style: str = "gerund", world: str = "basic") -> Corpus:
  """Draws the captioned crops of `num_images` renderer images.

  Args:
    seed: corpus seed.
    split: seed-sequence split id (`WEB_SPLIT` or `HELD_OUT_SPLIT`).
    num_images: renderer images to draw.
    image_size: their longest side (the demo's `synthetic_image_size`).
    crop_size: S, the CLIP input resolution.
    progress: show a progress bar.
    prompt_style: style of the HOI and verb captions
      (`config.model.prompt_style`).
    world: the renderer's world ('basic' or 'compositional',
      `config.dataset.synthetic_world`).

  Returns:
    The Corpus (module docstring).
  """
  hoi_ids = {h: i for i, h in enumerate(renderer_hois(world))}
  obj_ids = {o: i for i, o in enumerate(renderer_objects(world))}
  images, kinds, caps, hois, objs = [], [], [], [], []
  for i in tqdm.trange(num_images, desc="corpus", disable=not progress):
    rng = np.random.default_rng([seed, split, i])
    pixels, groups = synthetic_scenes.sample_image(rng, image_size,
                                                   "hico_det", world)
    scene_caps = []
    for g in groups:
      t = g["template"]
      if g["object_box"] is None:
        continue
      verbs = t.hico_verbs
      pair = pair_captions(verbs, t.obj, prompt_style)
      scene_caps += pair
      images.append(square_crop(
          pixels, union_box(g["person_box"], g["object_box"]), crop_size))
      kinds.append("pair")
      caps.append(pair)
      hois.append(hoi_ids[(verbs[0], t.obj)])
      objs.append(obj_ids[t.obj])
      images.append(square_crop(pixels, g["object_box"], crop_size))
      kinds.append("object")
      caps.append([metadata.object_prompt(t.obj)])
      hois.append(-1)
      objs.append(obj_ids[t.obj])
    if scene_caps:
      images.append(_scene_view(pixels, crop_size))
      kinds.append("scene")
      caps.append(scene_caps)
      hois.append(-1)
      objs.append(-1)
  captions = sorted({c for cs in caps for c in cs})
  index = {c: j for j, c in enumerate(captions)}
  targets = np.zeros((len(images), len(captions)), bool)
  for n, cs in enumerate(caps):
    targets[n, [index[c] for c in cs]] = True
  return Corpus(np.stack(images), np.asarray(kinds), captions, targets,
                np.asarray(hois), np.asarray(objs))


def normalise(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> CLIP-normalised float32."""
  return (images.astype(np.float32) / 255.0 - _CLIP_MEAN) / _CLIP_STD
