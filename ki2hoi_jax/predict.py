r"""Predict HOI triplets on image files with a trained KI2HOI checkpoint.

  python -m ki2hoi_jax.predict --config=configs/uv.py --checkpoint=/tmp/uv \
      --images a.jpg b.png ... --out /tmp/predictions \
      [--score_threshold=0.3] [--top_k=10] [--which=auto|best|latest] \
      [--verbs="throw,catch"] [--objects="frisbee"] [--prompts_file=F] \
      [--config.inference.score_fusion=genvlkt ...]

`--checkpoint` is a training workdir (its best checkpoint when
`checkpoints_best/` holds one, else the latest of `checkpoints/`; `--which`
picks), a `checkpoints/` folder (latest step) or one step folder
(`checkpoints/<step>`). `--config` may be left out: the config saved with the
checkpoint is used then (`--config.x=y` overrides need `--config`). Images can
follow `--images` or be given as further arguments. `--verbs`, `--objects` and
`--prompts_file` replace the class list by an open vocabulary
(`ki2hoi_jax/open_vocabulary.py`, README "Open vocabulary").

Each image is prepared exactly as in evaluation (`data/transforms.py`): the
short side resized to `dataset.eval_short_side` (long side at most
`dataset.max_size`, bilinear with antialiasing), ImageNet normalisation, zero
padding at the bottom/right to the size bucket of `dataset.size_buckets`, and
the CLIP view (bicubic resize of the short side to `dataset.clip_image_size`,
centre crop, CLIP normalisation). JPEG files are decoded by TensorFlow as the
input pipeline does; other formats by Pillow. Greyscale and 16-bit images are
replicated to RGB, images with an alpha channel are composited on white, and a
JPEG with an EXIF orientation tag is rotated upright first. The model runs
jitted on a batch of one (one compilation per padded shape), then
post-processing as evaluation (`config.inference`: score fusion, top-k
candidates, per-class triplet NMS), then `--score_threshold` and `--top_k`.

Output per image, in `--out` (`<stem>_<n>` when two inputs share a stem):

* `<stem>.json`:
    {"image": "<input path as given>",
     "width": int, "height": int,          # of the (upright) input image
     "triplets": [                         # descending score, <= top_k,
       {"human_box": [x1, y1, x2, y2],     #   all with score >= threshold
        "object_box": [x1, y1, x2, y2],    # pixels of the input image,
        "object": "bicycle",               #   clipped to it (floats)
        "verb": "ride",
        "score": 0.82}, ...]}
  `score` is the fused score of `config.inference.score_fusion` divided by
  its maximum (3 for 'sum', 2 for 'genvlkt', 1 for 'product') so that it lies
  in [0, 1] whatever the fusion. `verb` / `object` are class names of the
  training dataset (e.g. "sit_on", "dining_table") or the user's open-vocabulary
  names; for a plain prompt of a prompts file `verb` is the prompt text.
* `<stem>.png`: the input image (upscaled to a short side of at least 480 px
  so labels stay legible) with the triplets drawn by
  `visualize.draw_triplets` (labels "person ride bicycle 0.82").

A file that is missing or is not a readable image is reported with its path
(logged as an error and listed in the final summary); the other images still
finish, and the command exits with status 1.

From `python -m ki2hoi_jax.main` with `config.mode='predict'` (or 'all'),
`predict_from_config(config, workdir)` predicts `config.predict.images` (or the
first test images of the dataset) with the workdir's checkpoint into
`<workdir>/predictions/`.
"""

import dataclasses
import io
import json
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from ki2hoi_jax import open_vocabulary
from ki2hoi_jax import visualize
from ki2hoi_jax.evaluation import postprocess

# Maximum of each fused score (postprocess.candidate_scores).
SCORE_MAX = {"sum": 3.0, "genvlkt": 2.0, "product": 1.0}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff")
CHECKPOINT_CHOICES = ("auto", "best", "latest")
_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112
# Collections of the checkpointed state that the model reads.
_STATE_KEYS = ("step", "params", "batch_stats", "model_state")


class ImageLoadError(ValueError):
  """An input file is missing or is not a readable image."""


PNG_MIN_SHORT_SIDE = 480  # Annotated PNGs of smaller images are upscaled.


class PredictError(RuntimeError):
  """Some images could not be predicted (the others were written)."""


# ------------------------------------------------------------------- images


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


# --------------------------------------------------------------- checkpoints


@dataclasses.dataclass
class Restored:
  """What `restore_checkpoint` read.

  Attributes:
    variables: model variables without `constants`: `params`, plus
      `batch_stats` and the other saved collections (e.g. `frozen_bn`).
    step: training step of the checkpoint.
    directory: the step folder read.
    config: the config saved beside it (a dict), or None.
  """
  variables: Dict[str, Any]
  step: int
  directory: str
  config: Optional[Dict[str, Any]]


def _steps(manager_dir: str) -> List[int]:
  """Complete steps of an orbax manager folder (digit names with `state`)."""
  if not os.path.isdir(manager_dir):
    return []
  return sorted(int(n) for n in os.listdir(manager_dir)
                if n.isdigit() and os.path.isdir(
                    os.path.join(manager_dir, n, "state")))


def find_checkpoint(path: str, which: str = "auto") -> str:
  """The step folder of a workdir, manager folder or step folder.

  Args:
    path: training workdir, `<workdir>/checkpoints[_best]` or a step folder.
    which: 'auto' (best, else latest), 'best' or 'latest' (workdirs only).

  Returns:
    The absolute step folder (it holds `state/`).

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  if which not in CHECKPOINT_CHOICES:
    raise ValueError(f"which must be one of {CHECKPOINT_CHOICES}, got "
                     f"{which!r}")
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")):
    return path
  candidates = {"best": os.path.join(path, "checkpoints_best"),
                "latest": os.path.join(path, "checkpoints")}
  order = {"auto": ("best", "latest"), "best": ("best",),
           "latest": ("latest",)}[which]
  if any(os.path.isdir(candidates[k]) for k in candidates):
    for kind in order:
      steps = _steps(candidates[kind])
      if steps:
        return os.path.join(candidates[kind], str(steps[-1]))
    raise FileNotFoundError(
        f"no {'/'.join(order)} checkpoint under {path} (looked in "
        f"{', '.join(candidates[k] for k in order)})")
  steps = _steps(path)
  if steps:
    return os.path.join(path, str(steps[-1]))
  raise FileNotFoundError(
      f"{path} is not a training workdir, checkpoints folder or checkpoint "
      "step folder (no checkpoints/, checkpoints_best/, <step>/state or "
      "state/ in it)")


def _read_saved_config(step_dir: str) -> Optional[Dict[str, Any]]:
  for candidate in (os.path.join(step_dir, "config", "metadata"),
                    os.path.join(os.path.dirname(os.path.dirname(step_dir)),
                                 "config.json")):
    if os.path.isfile(candidate):
      with open(candidate) as f:
        return json.load(f)
  return None


def restore_checkpoint(path: str, which: str = "auto") -> Restored:
  """Reads the model variables of a training checkpoint (not the optimizer).

  Args:
    path: see `find_checkpoint`.
    which: see `find_checkpoint`.

  Returns:
    Restored, with host numpy arrays.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step_dir = find_checkpoint(path, which)
  state_dir = os.path.join(step_dir, "state")
  from etils import epath  # pylint: disable=g-import-not-at-top
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(epath.Path(state_dir)).tree
  finally:
    handler.close()
  missing = [k for k in ("params",) if k not in tree]
  if missing:
    raise FileNotFoundError(f"{state_dir} holds no {missing} (keys: "
                            f"{sorted(tree)})")
  wanted = {k: tree[k] for k in _STATE_KEYS if k in tree}
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                          wanted)
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  with ocp.PyTreeCheckpointer() as checkpointer:
    state = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=restore_args, partial_restore=True))
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  for name, value in (state.get("model_state") or {}).items():
    if name != "constants" and value:
      variables[name] = value
  step = int(np.asarray(state["step"])) if "step" in state else -1
  return Restored(variables, step, step_dir, _read_saved_config(step_dir))


def _as_tuples(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_as_tuples(v) for v in value)
  return value


def _merge(config: ml_collections.ConfigDict, saved: Mapping[str, Any]
           ) -> None:
  for key, value in saved.items():
    if key not in config:
      logging.warning("Saved config field %r is unknown; ignored.", key)
    elif isinstance(value, Mapping) and isinstance(
        config[key], ml_collections.ConfigDict):
      _merge(config[key], value)
    else:
      with config.ignore_type():
        config[key] = _as_tuples(value)


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run config from the JSON saved with a checkpoint (over configs/base)."""
  try:
    from configs import base  # pylint: disable=g-import-not-at-top
    config = base.get_config()
  except ImportError:  # Installed package without the configs folder.
    return ml_collections.ConfigDict(
        json.loads(json.dumps(saved)), type_safe=False)
  _merge(config, saved)
  return config


def _flat(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = _as_tuples(v)
  return out


def check_config_matches(config, saved: Optional[Mapping[str, Any]]
                         ) -> List[str]:
  """Model/dataset fields where `config` differs from the saved config.

  Returns:
    'field: saved -> given' lines (also logged as a warning); differences in
    the architecture make the restore or the forward pass fail.
  """
  if not saved:
    return []
  ours = _flat(config.to_dict())
  diffs = []
  for key, value in sorted(_flat(saved).items()):
    if key.split(".")[0] not in ("model", "dataset"):
      continue
    if key in ours and ours[key] != value:
      diffs.append(f"{key}: {value!r} -> {ours[key]!r}")
  if diffs:
    logging.warning("The config differs from the one saved with the "
                    "checkpoint:\n  %s", "\n  ".join(diffs))
  return diffs


# -------------------------------------------------------------- prediction


def decode_triplets(selected: Mapping[str, np.ndarray],
                    sub_boxes: np.ndarray, obj_boxes: np.ndarray,
                    orig_size: Sequence[int],
                    vocabulary: open_vocabulary.Vocabulary, *,
                    score_fusion: str, score_threshold: float, top_k: int,
                    nms: bool = True, nms_threshold: float = 0.7,
                    nms_alpha: float = 1.0, nms_beta: float = 0.5
                    ) -> List[Dict[str, Any]]:
  """Top-k candidates of one image -> triplet dicts (module docstring).

  Args:
    selected: `postprocess.select_top_k` output of one image ([k] `scores`,
      `queries`, `candidates`).
    sub_boxes: [Q, 4] human boxes (normalised cxcywh).
    obj_boxes: [Q, 4] object boxes.
    orig_size: (h, w) of the image.
    vocabulary: the scored classes (`table` gives verb/object of a
      candidate).
    score_fusion: `config.inference.score_fusion` (sets the normalisation).
    score_threshold: minimum normalised score.
    top_k: maximum number of triplets.
    nms: per-class triplet NMS (class = candidate row of the table).
    nms_threshold: NMS threshold.
    nms_alpha: NMS human-IoU exponent.
    nms_beta: NMS object-IoU exponent.

  Returns:
    Triplet dicts in descending score.
  """
  h, w = (float(v) for v in orig_size)
  size = np.asarray([[h, w]])
  scores = np.asarray(selected["scores"], np.float64) / SCORE_MAX[score_fusion]
  q = np.asarray(selected["queries"])
  c = np.asarray(selected["candidates"])
  sub = postprocess.to_original_xyxy(np.asarray(sub_boxes)[None], size)[0][q]
  obj = postprocess.to_original_xyxy(np.asarray(obj_boxes)[None], size)[0][q]
  if nms:
    keep = postprocess.triplet_nms(sub, obj, scores, c, nms_threshold,
                                   nms_alpha, nms_beta)
  else:
    keep = np.argsort(-scores, kind="stable")
  keep = [i for i in keep if scores[i] >= score_threshold][:max(0, top_k)]
  limit = np.asarray([w, h, w, h])
  table = vocabulary.table
  out = []
  for i in keep:
    out.append({
        "human_box": np.clip(sub[i], 0, limit).tolist(),
        "object_box": np.clip(obj[i], 0, limit).tolist(),
        "object": vocabulary.objects[int(table.object_index[c[i]])],
        "verb": vocabulary.verbs[int(table.verb_index[c[i]])],
        "score": float(scores[i]),
    })
  return out


# Compiled forward passes by (model config, K, candidate table, fusion,
# top-k), so that predicting again in a notebook or a test does not recompile.
_FORWARD_CACHE: Dict[Tuple[Any, ...], Any] = {}
_FORWARD_CACHE_SIZE = 8


def _jitted_forward(config, num_object_classes: int,
                    table: postprocess.CandidateTable, score_fusion: str,
                    num_candidates: int):
  """jit(variables, image, mask, clip_image, text) -> outputs + top-k."""
  from ki2hoi_jax.models import ki2hoi  # pylint: disable=g-import-not-at-top
  key = (json.dumps(config.model.to_dict(), sort_keys=True, default=str),
         config.dataset.name, int(num_object_classes), score_fusion,
         int(num_candidates),
         *(np.asarray(getattr(table, f.name)).tobytes()
           if isinstance(getattr(table, f.name), np.ndarray)
           else getattr(table, f.name)
           for f in dataclasses.fields(table)))
  if key in _FORWARD_CACHE:
    return _FORWARD_CACHE[key]
  model = ki2hoi.build_model(config, num_object_classes=num_object_classes)

  def forward(variables, image, mask, clip_image, text):
    outputs = model.apply(variables, image, mask, clip_image, text,
                          train=False)
    out = postprocess.select_top_k(outputs, table, score_fusion,
                                   num_candidates)
    out.update({k: outputs[k] for k in outputs if k.startswith("pred_")})
    return out

  while len(_FORWARD_CACHE) >= _FORWARD_CACHE_SIZE:
    _FORWARD_CACHE.pop(next(iter(_FORWARD_CACHE)))  # Oldest first.
  _FORWARD_CACHE[key] = jax.jit(forward)
  return _FORWARD_CACHE[key]


class Predictor:
  """A restored model bound to a class list; `predict(pixels)` -> triplets.

  Attributes:
    config: the run config.
    vocabulary: the scored classes.
    score_threshold: minimum normalised score of a reported triplet.
    top_k: maximum triplets per image.
  """

  def __init__(self, config, variables: Mapping[str, Any],
               vocabulary: open_vocabulary.Vocabulary,
               clip_params: Mapping[str, Any], *,
               score_threshold: float = 0.3, top_k: int = 10):
    """Prepares text embeddings, params and the jitted forward pass.

    Args:
      config: the run config (model, dataset, inference).
      variables: restored model variables (`Restored.variables`).
      vocabulary: the classes to score.
      clip_params: CLIP text-tower params the model was trained with.
      score_threshold: see the class docstring.
      top_k: see the class docstring.
    """
    self.config = config
    self.vocabulary = vocabulary
    self.score_threshold = float(score_threshold)
    self.top_k = int(top_k)
    fusion = config.inference.score_fusion
    if fusion not in SCORE_MAX:
      raise ValueError(f"inference.score_fusion must be one of "
                       f"{tuple(SCORE_MAX)}, got {fusion!r}")
    prepared = open_vocabulary.prepare_classes(
        vocabulary, variables["params"], clip_params, config)
    self._text = jax.device_put(prepared.interaction_embeddings)
    self._variables = jax.device_put(
        dict(variables, params=prepared.params))
    self._forward = _jitted_forward(
        config, prepared.num_object_classes, vocabulary.table, fusion,
        int(config.inference.top_k))
    self._shapes = set()

  @property
  def compiled_shapes(self) -> List[Tuple[int, int]]:
    """Padded (H, W) shapes seen so far (one compilation each)."""
    return sorted(self._shapes)

  def outputs(self, batch: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Host arrays of a preprocessed batch of one (`preprocess`).

    Returns:
      The final-layer model outputs (`pred_*`, docs/contracts.md) and the
      `postprocess.select_top_k` candidates (`scores`, `queries`,
      `candidates`, [1, k]).
    """
    self._shapes.add(tuple(batch["image"].shape[1:3]))
    return jax.device_get(self._forward(
        self._variables, batch["image"], batch["mask"], batch["clip_image"],
        self._text))

  def predict_batch(self, batch: Mapping[str, np.ndarray]
                    ) -> List[Dict[str, Any]]:
    """Triplets of a preprocessed batch of one (`preprocess`)."""
    out = self.outputs(batch)
    inf = self.config.inference
    return decode_triplets(
        {k: out[k][0] for k in ("scores", "queries", "candidates")},
        out["pred_sub_boxes"][0], out["pred_obj_boxes"][0],
        batch["orig_size"][0], self.vocabulary,
        score_fusion=inf.score_fusion, score_threshold=self.score_threshold,
        top_k=self.top_k, nms=bool(inf.nms),
        nms_threshold=float(inf.nms_threshold),
        nms_alpha=float(inf.nms_alpha), nms_beta=float(inf.nms_beta))

  def predict(self, pixels: np.ndarray) -> List[Dict[str, Any]]:
    """Triplets of one [h, w, 3] uint8 RGB image."""
    return self.predict_batch(preprocess(pixels, self.config))


@dataclasses.dataclass
class Summary:
  """Outcome of `predict_files`.

  Attributes:
    out_dir: the output folder.
    written: per successful image: {'image', 'json', 'png', 'num_triplets'}.
    failed: (image path, error message naming it) per failed image.
    checkpoint: the step folder the weights came from ('' if not known).
    step: its training step (-1 if not known).
  """
  out_dir: str
  written: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  failed: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
  checkpoint: str = ""
  step: int = -1

  def text(self) -> str:
    """Human-readable report of where everything went."""
    lines = [f"Predictions for {len(self.written)} image(s) in "
             f"{self.out_dir}" + (f" (checkpoint {self.checkpoint}, step "
                                  f"{self.step})" if self.checkpoint else "")]
    for item in self.written:
      lines.append(f"  {item['image']}: {item['num_triplets']} triplet(s) -> "
                   f"{os.path.basename(item['json'])}, "
                   f"{os.path.basename(item['png'])}")
    if self.failed:
      lines.append(f"FAILED: {len(self.failed)} image(s):")
      lines += [f"  {message}" for _, message in self.failed]
    return "\n".join(lines)


def _unique_stem(path: str, used: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0] or "image"
  name, n = stem, 1
  while name in used:
    name = f"{stem}_{n}"
    n += 1
  used.add(name)
  return name


def predict_files(predictor: Predictor, images: Sequence[str], out_dir: str,
                  summary: Optional[Summary] = None) -> Summary:
  """Predicts each image file and writes `<stem>.json` and `<stem>.png`.

  A failing image is logged and recorded in `summary.failed`; the others
  still run.

  Args:
    predictor: the Predictor.
    images: image paths.
    out_dir: output folder (created).
    summary: a Summary to fill (default: a new one).

  Returns:
    The Summary.
  """
  os.makedirs(out_dir, exist_ok=True)
  summary = summary or Summary(out_dir)
  used = set()
  for path in images:
    start = time.time()
    try:
      image, pixels = load_image(path)
      triplets = predictor.predict(pixels)
    except ImageLoadError as e:
      logging.error("%s", e)
      summary.failed.append((path, str(e)))
      continue
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("Prediction failed for %s", path)
      summary.failed.append((path, f"{path}: {type(e).__name__}: {e}"))
      continue
    stem = _unique_stem(path, used)
    record = {"image": path, "width": image.width, "height": image.height,
              "triplets": triplets}
    json_path = os.path.join(out_dir, stem + ".json")
    png_path = os.path.join(out_dir, stem + ".png")
    with open(json_path, "w") as f:
      json.dump(record, f, indent=1)
    # Small images are upscaled (short side >= 480 px) so labels stay
    # legible; box coordinates in the JSON refer to the input image.
    visualize.draw_triplets(image, triplets, max_triplets=len(triplets),
                            min_short_side=PNG_MIN_SHORT_SIDE).save(png_path)
    summary.written.append({"image": path, "json": json_path,
                            "png": png_path,
                            "num_triplets": len(triplets)})
    logging.info("%s: %d triplet(s) in %.2fs -> %s", path, len(triplets),
                 time.time() - start, json_path)
  return summary


def build_predictor(config, restored: Restored, *, verbs: Any = "",
                    objects: Any = "", prompts_file: str = "",
                    score_threshold: float = 0.3, top_k: int = 10,
                    clip_params: Optional[Mapping[str, Any]] = None
                    ) -> Predictor:
  """A Predictor for restored weights and a (closed or open) class list.

  Args:
    config: the run config.
    restored: `restore_checkpoint` output.
    verbs: open vocabulary verbs (comma-separated or a list).
    objects: open vocabulary objects.
    prompts_file: open vocabulary prompts file.
    score_threshold: minimum normalised score.
    top_k: triplets per image.
    clip_params: CLIP text params (default:
      `open_vocabulary.clip_text_params(config)`).

  Returns:
    The Predictor.
  """
  vocabulary = open_vocabulary.vocabulary_from_args(config, verbs, objects,
                                                    prompts_file)
  if vocabulary.is_open:
    logging.info("Open vocabulary: %d interaction prompts, %d candidates, "
                 "new objects %s.", vocabulary.num_classes,
                 vocabulary.table.num_candidates,
                 list(vocabulary.new_objects) or "none")
  if clip_params is None:
    clip_params = open_vocabulary.clip_text_params(config)
  return Predictor(config, restored.variables, vocabulary, clip_params,
                   score_threshold=score_threshold, top_k=top_k)


def run(config, checkpoint: str, images: Sequence[str], out_dir: str, *,
        which: str = "auto", verbs: Any = "", objects: Any = "",
        prompts_file: str = "", score_threshold: Optional[float] = None,
        top_k: Optional[int] = None,
        clip_params: Optional[Mapping[str, Any]] = None) -> Summary:
  """Restores a checkpoint and predicts image files (the CLI's work).

  Args:
    config: the run config; None = the config saved with the checkpoint.
    checkpoint: workdir, checkpoints folder or step folder.
    images: image paths.
    out_dir: output folder.
    which: 'auto' | 'best' | 'latest'.
    verbs: open vocabulary verbs.
    objects: open vocabulary objects.
    prompts_file: open vocabulary prompts file.
    score_threshold: default `config.predict.score_threshold`.
    top_k: default `config.predict.top_k`.
    clip_params: CLIP text params (default: as the trainer built them).

  Returns:
    The Summary (`summary.text()` reports it).
  """
  restored = restore_checkpoint(checkpoint, which)
  logging.info("Restored step %d from %s.", restored.step, restored.directory)
  if config is None:
    if restored.config is None:
      raise FileNotFoundError(f"no config saved with {restored.directory}; "
                              "pass --config")
    config = config_from_saved(restored.config)
  else:
    check_config_matches(config, restored.config)
  predictor = build_predictor(
      config, restored, verbs=verbs, objects=objects,
      prompts_file=prompts_file,
      score_threshold=(config.predict.score_threshold
                       if score_threshold is None else score_threshold),
      top_k=config.predict.top_k if top_k is None else top_k,
      clip_params=clip_params)
  summary = Summary(out_dir, checkpoint=restored.directory,
                    step=restored.step)
  return predict_files(predictor, images, out_dir, summary)


def default_images(config, workdir: str, limit: int = 4) -> List[str]:
  """The first `limit` test images of the config's dataset.

  With `dataset.root == ''` that is the synthetic dataset the trainer
  generates into `<workdir>/synthetic_<name>` (generated here if missing, as
  `input_pipeline.prepare_dataset` does).
  """
  from ki2hoi_jax.data import annotations  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  cfg = config.dataset
  root = input_pipeline.dataset_root(config, workdir, generate=True)
  _, folder = annotations.split_paths(root, "test", cfg.name)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"no test image folder {folder}; set "
                            "config.predict.images")
  return list_images(folder, limit)


def predict_from_config(config, workdir: str) -> Summary:
  """`main.py` mode 'predict': the workdir's checkpoint on a few images.

  Reads `config.predict` (images, score_threshold, top_k, verbs, objects,
  prompts_file, checkpoint) and writes to `<workdir>/predictions/`.

  Returns:
    The Summary (printed).

  Raises:
    PredictError: after all images ran, when some failed.
  """
  p = config.predict
  images = [s.strip() for s in p.images.split(",") if s.strip()]
  if not images:
    images = default_images(config, workdir)
  summary = run(config, workdir, images, os.path.join(workdir, "predictions"),
                which=p.checkpoint, verbs=p.verbs, objects=p.objects,
                prompts_file=p.prompts_file)
  print(summary.text())
  if summary.failed:
    raise PredictError(f"{len(summary.failed)} of {len(images)} image(s) "
                       "failed: " + "; ".join(m for _, m in summary.failed))
  return summary


# ----------------------------------------------------------------------- CLI


def _define_flags():
  """Flags of the command line (defined only when run as a program)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py); default: the "
      "config saved with the checkpoint.", lock_config=True)
  f = {
      "checkpoint": flags.DEFINE_string(
          "checkpoint", None, "Training workdir, checkpoints folder or "
          "checkpoint step folder.", required=True),
      "images": flags.DEFINE_multi_string(
          "images", [], "Image files (more may follow as arguments)."),
      "out": flags.DEFINE_string("out", None, "Output folder.",
                                 required=True),
      "which": flags.DEFINE_enum("which", "auto", CHECKPOINT_CHOICES,
                                 "Checkpoint of a workdir: best if any "
                                 "(auto), best or latest."),
      "score_threshold": flags.DEFINE_float(
          "score_threshold", None, "Minimum normalised score (default "
          "config.predict.score_threshold)."),
      "top_k": flags.DEFINE_integer(
          "top_k", None, "Triplets per image (default config.predict.top_k)."),
      "verbs": flags.DEFINE_string(
          "verbs", None, "Open vocabulary: comma-separated verbs."),
      "objects": flags.DEFINE_string(
          "objects", None, "Open vocabulary: comma-separated objects."),
      "prompts_file": flags.DEFINE_string(
          "prompts_file", None, "Open vocabulary: one 'verb,object' or plain "
          "prompt per line."),
  }
  return config, f


def main(argv: Sequence[str], config_flag, f) -> int:
  """Runs the CLI; returns the exit status (1 when any image failed)."""
  images = list(f["images"].value) + list(argv[1:])
  if not images:
    print("error: no images (use --images a.jpg b.png ...)", file=sys.stderr)
    return 2
  config = config_flag.value
  pick = lambda name, default: (  # pylint: disable=g-long-lambda
      f[name].value if f[name].value is not None else default)
  try:
    if config is not None:
      from ki2hoi_jax import config_check  # pylint: disable=g-import-not-at-top
      config_check.validate(config)
    p = config.predict if config is not None else None
    summary = run(
        config, f["checkpoint"].value, images, f["out"].value,
        which=f["which"].value,
        verbs=pick("verbs", p.verbs if p else ""),
        objects=pick("objects", p.objects if p else ""),
        prompts_file=pick("prompts_file", p.prompts_file if p else ""),
        score_threshold=f["score_threshold"].value, top_k=f["top_k"].value)
  except (FileNotFoundError, ValueError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary.text())
  return 1 if summary.failed else 0


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _CONFIG, _FLAGS = _define_flags()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.set_verbosity(logging.INFO)

  def _main(argv):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    sys.exit(main(argv, _CONFIG, _FLAGS))

  app.run(_main)
