"""The synthetic "COCO" of detector pretraining: boxed renderer images.

KI2HOI's detector starts from DETR-R50 trained on COCO, which boxes every
person and every object whatever interaction it takes part in. This module
is that corpus for the synthetic world: image i of seed s is
`synthetic_scenes.sample_image(default_rng([s, split, i]), ...)` with
`split` = `DETECTOR_SPLIT` (training corpus) or `DETECTOR_HELD_OUT_SPLIT`
(held-out images of the box AP figure). The seed-sequence split ids of the
other renderer users are disjoint from these (`OTHER_RENDERER_SPLITS`: the
HICO-format writer data/synthetic.py draws its train and test images from
split ids 0 and 1, the CLIP corpus clip/corpus.py from 2 and 3), so the
corpus never holds an image of a detector's train or test split, nor one of
CLIP's.

Every drawn person and object is boxed and classed (object classes are
HICO-DET object indices); interaction labels are left out. Each image is
resized, as the HOI training pipeline does (`transforms.resized_size`), to a
short side drawn from `short_sides` (long side <= `max_size`) and padded at
the bottom and right to [max_size, max_size].

Boxes: absolute pixel xyxy in the resized image, in the renderer's
inclusive convention (`synthetic_scenes`), scaled with the image; training
normalises them with `transforms.xyxy_to_cxcywh` as the input pipeline does.
"""

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image
import tqdm

from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes
from ki2hoi_jax.data import transforms

DETECTOR_SPLIT = 4  # Seed-sequence split id of the training corpus.
DETECTOR_HELD_OUT_SPLIT = 5  # Split id of the held-out images.
# Split ids of the other renderer users: the dataset writer (train 0,
# test 1) and the CLIP corpus (clip/corpus.py WEB_SPLIT, HELD_OUT_SPLIT).
OTHER_RENDERER_SPLITS = (0, 1, 2, 3)
MAX_INSTANCES = 3  # The renderer draws 1-3 groups: <= 3 people, 3 objects.


@dataclasses.dataclass
class DetectionCorpus:
  """Boxed and classed renderer images, padded to one size.

  Attributes:
    images: [N, S, S, 3] uint8, zero in padding (S = max_size).
    sizes: [N, 2] int32 (height, width) of the valid region.
    person_boxes: [N, G, 4] float32 pixel xyxy (G = MAX_INSTANCES).
    person_mask: [N, G] bool, True on real people.
    object_boxes: [N, G, 4] float32 pixel xyxy.
    object_labels: [N, G] int32 HICO-DET object index (0 on padding).
    object_mask: [N, G] bool, True on real objects.
  """
  images: np.ndarray
  sizes: np.ndarray
  person_boxes: np.ndarray
  person_mask: np.ndarray
  object_boxes: np.ndarray
  object_labels: np.ndarray
  object_mask: np.ndarray

  def __len__(self) -> int:
    return int(self.images.shape[0])


def renderer_object_ids(world: str = "basic") -> np.ndarray:
  """Sorted HICO-DET indices of the objects the renderer's `world` draws."""
  meta = metadata.hico()
  ids = {meta.hois[h][1]
         for h in synthetic_scenes.hoi_subset("hico_det", world)}
  return np.asarray(sorted(ids), np.int32)


def _resize(pixels: np.ndarray, out_hw) -> np.ndarray:
  h, w = pixels.shape[:2]
  if (h, w) == tuple(out_hw):
    return pixels
  img = Image.fromarray(pixels).resize((out_hw[1], out_hw[0]),
                                       Image.BILINEAR)
  return np.asarray(img, np.uint8)


def detection_corpus(seed: int, split: int, num_images: int,
                     image_size: int, short_sides: Sequence[int],
                     max_size: int, progress: bool = False,
                     world: str = "basic") -> DetectionCorpus:
  """Draws `num_images` boxed renderer images (module docstring).

  Args:
    seed: corpus seed.
    split: seed-sequence split id (`DETECTOR_SPLIT` or
      `DETECTOR_HELD_OUT_SPLIT`).
    num_images: images to draw.
    image_size: longest side the renderer draws (the config's
      `dataset.synthetic_image_size`).
    short_sides: short sides to resize to, one drawn per image.
    max_size: limit of the long side, and the padded size S.
    progress: show a progress bar.
    world: the renderer's world ('basic' or 'compositional', the config's
      `dataset.synthetic_world`).

  Returns:
    The DetectionCorpus.

  Raises:
    ValueError: `split` is another renderer user's split id.
  """
  if split in OTHER_RENDERER_SPLITS:
    raise ValueError(f"split {split} belongs to another renderer user "
                     f"{OTHER_RENDERER_SPLITS}")
  objects = metadata.hico().objects
  g = MAX_INSTANCES
  images = np.zeros((num_images, max_size, max_size, 3), np.uint8)
  sizes = np.zeros((num_images, 2), np.int32)
  pboxes = np.zeros((num_images, g, 4), np.float32)
  pmask = np.zeros((num_images, g), bool)
  oboxes = np.zeros((num_images, g, 4), np.float32)
  olabels = np.zeros((num_images, g), np.int32)
  omask = np.zeros((num_images, g), bool)
  for i in tqdm.trange(num_images, desc="detection corpus",
                       disable=not progress):
    rng = np.random.default_rng([seed, split, i])
    pixels, groups = synthetic_scenes.sample_image(rng, image_size,
                                                   "hico_det", world)
    h, w = pixels.shape[:2]
    short = int(short_sides[int(rng.integers(len(short_sides)))])
    oh, ow = transforms.resized_size(h, w, short, max_size)
    images[i, :oh, :ow] = _resize(pixels, (oh, ow))
    sizes[i] = (oh, ow)
    scale = np.array([ow / w, oh / h, ow / w, oh / h], np.float32)
    people = [gr["person_box"] for gr in groups]
    things = [(gr["object_box"], gr["template"].obj) for gr in groups
              if gr["object_box"] is not None]
    for j, box in enumerate(people):
      pboxes[i, j], pmask[i, j] = np.asarray(box, np.float32) * scale, True
    for j, (box, name) in enumerate(things):
      oboxes[i, j], omask[i, j] = np.asarray(box, np.float32) * scale, True
      olabels[i, j] = objects.index(name)
  return DetectionCorpus(images, sizes, pboxes, pmask, oboxes, olabels, omask)


def normalise(images: np.ndarray, sizes: np.ndarray):
  """uint8 images -> (ImageNet-normalised float32, zero in padding; mask).

  Args:
    images: [B, S, S, 3] uint8.
    sizes: [B, 2] valid (height, width).

  Returns:
    (image [B, S, S, 3] float32, mask [B, S, S] bool).
  """
  s = images.shape[1:3]
  rows = np.arange(s[0])[None, :, None] < sizes[:, 0, None, None]
  cols = np.arange(s[1])[None, None, :] < sizes[:, 1, None, None]
  mask = rows & cols
  x = (images.astype(np.float32) / 255.0
       - np.asarray(transforms.IMAGENET_MEAN, np.float32)) / np.asarray(
           transforms.IMAGENET_STD, np.float32)
  return np.where(mask[..., None], x, 0.0).astype(np.float32), mask
