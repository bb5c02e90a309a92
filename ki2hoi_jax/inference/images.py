"""Image files as the model sees them: decoding, RGB conversion, preprocessing.

Each image is prepared exactly as in evaluation (`data/transforms.py`): the
short side resized to `dataset.eval_short_side` (long side at most
`dataset.max_size`, bilinear with antialiasing), ImageNet normalisation, zero
padding at the bottom/right to the size bucket of `dataset.size_buckets`, and
the CLIP view (bicubic resize of the short side to `dataset.clip_image_size`,
centre crop, CLIP normalisation). JPEG files are decoded by TensorFlow as the
input pipeline does; other formats by Pillow. Greyscale and 16-bit images are
replicated to RGB, images with an alpha channel are composited on white, and a
JPEG with an EXIF orientation tag is rotated upright first.
"""

import io
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff")
_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112


class ImageLoadError(ValueError):
  """An input file is missing or is not a readable image."""


def _to_rgb(image: Image.Image) -> Image.Image:
  """Any Pillow mode -> RGB (alpha on white, 16-bit/float rescaled)."""
  if image.mode in ("I", "F") or image.mode.startswith("I;"):
    a = np.asarray(image, np.float64)
    top = a.max() if a.size else 0.0
    if top > 255:  # 16-bit or float data: rescale to 8 bits.
      a = a * (255.0 / top)
    image = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
  if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
      image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def load_image(path: str) -> Tuple[Image.Image, np.ndarray]:
  """Reads an image file as the model sees it.

  Args:
    path: image file.

  Returns:
    (RGB Pillow image, [h, w, 3] uint8 pixels of it).

  Raises:
    ImageLoadError: missing file or data Pillow cannot decode (the message
      names the file).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ImageLoadError(f"{path}: cannot read file ({e.strerror or e})"
                         ) from e
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()  # Decodes everything: truncated or corrupt data fails here.
      orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
      if data.startswith(_JPEG_MAGIC) and orientation in (1, None) and (
          im.mode in ("RGB", "L")):
        pixels = None  # Decoded by TensorFlow below, as in evaluation.
      else:
        pixels = np.asarray(_to_rgb(ImageOps.exif_transpose(im)))
  except UnidentifiedImageError as e:
    raise ImageLoadError(f"{path}: not a readable image (unknown format or "
                         "corrupt data)") from e
  except Exception as e:  # Pillow raises many types on bad data.
    raise ImageLoadError(f"{path}: not a readable image "
                         f"({type(e).__name__}: {e})") from e
  if pixels is None:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      pixels = tf.io.decode_jpeg(data, channels=3,
                                 dct_method="INTEGER_ACCURATE").numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      raise ImageLoadError(f"{path}: not a readable JPEG ({e.message})"
                           ) from e
  if pixels.ndim != 3 or min(pixels.shape[:2]) < 1:
    raise ImageLoadError(f"{path}: empty image of shape {pixels.shape}")
  return Image.fromarray(pixels), pixels


def preprocess(pixels: np.ndarray, config) -> Dict[str, np.ndarray]:
  """Evaluation preprocessing of one image (input_pipeline, eval branch).

  Args:
    pixels: [h, w, 3] uint8 RGB.
    config: the run config (`dataset.eval_short_side`, `max_size`,
      `size_buckets`, `clip_image_size`).

  Returns:
    Batch of one: `image` [1, H, W, 3] float32 (ImageNet-normalised, zero
    padding), `mask` [1, H, W] bool, `clip_image` [1, S, S, 3] float32,
    `size` [1, 2] int32 (resized h, w), `orig_size` [1, 2] int32 (h, w).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.data import transforms  # pylint: disable=g-import-not-at-top
  cfg = config.dataset
  h, w = (int(v) for v in pixels.shape[:2])
  geom = transforms.eval_geometry(h, w, int(cfg.eval_short_side),
                                  int(cfg.max_size))
  pad = transforms.bucket_shape(
      *geom.out_size, transforms.bucket_sides(int(cfg.max_size),
                                              int(cfg.size_buckets)))
  img = tf.image.convert_image_dtype(tf.constant(pixels, tf.uint8),
                                     tf.float32)
  img = transforms.augment_image(
      img, tf.constant(False), tf.constant(geom.jitter, tf.float32),
      tf.constant(geom.jitter_order, tf.int32), tf.constant(False),
      tf.constant(geom.resize1, tf.int32),
      tf.constant(geom.crop_window, tf.int32),
      tf.constant(geom.out_size, tf.int32), use_jitter=False)
  image, mask = transforms.normalize_and_pad(img,
                                             tf.constant(pad, tf.int32))
  clip = transforms.clip_view(img, int(cfg.clip_image_size))
  return {"image": image.numpy()[None], "mask": mask.numpy()[None],
          "clip_image": clip.numpy()[None],
          "size": np.asarray([geom.out_size], np.int32),
          "orig_size": np.asarray([[h, w]], np.int32)}


def list_images(folder: str, limit: int = 0) -> List[str]:
  """Image files of a folder (sorted by name; at most `limit` if > 0)."""
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(IMAGE_EXTENSIONS))
  paths = [os.path.join(folder, n) for n in names]
  return paths[:limit] if limit > 0 else paths
