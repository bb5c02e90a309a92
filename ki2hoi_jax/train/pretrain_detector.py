r"""DETR-style pretraining of KI2HOI's detector on a synthetic "COCO".

KI2HOI's backbone and instance decoder start from DETR-R50 trained on COCO,
which boxes every person and every object whatever interaction it takes
part in; the zero-shot splits then only remove interaction labels. Offline
there is no DETR-R50, so this module makes its stand-in for a config's
model: the backbone, `input_proj`, encoder and instance interactor
(`models/instance_detector.py`) trained by set prediction on the detection
corpus the renderer draws from its own seed range
(`data/synthetic_detection.py`: every person and object boxed and classed,
no interaction labels):

  python -m ki2hoi_jax.train.pretrain_detector --config configs/demo.py \
      --out W/detector/synthetic_detr.msgpack --steps 1200 \
      [--config.model.num_queries=16] [--batch_size 8] [--seed 0] \
      [--num_images N]

Set prediction, each query set matched to its own ground truth on the host
(`train/detector_loss.py`).
AdamW with `optimizer.weight_decay` and `optimizer.grad_clip_norm`, a linear
warm-up over 5 % of the steps, then cosine decay; random horizontal flips.

Output, in the format of `ki2hoi_jax.weights.convert_detr`, so that
`config.init.detr_checkpoint` loads it through the same strict path:
`--out` (the detector's variables: `params/{backbone, input_proj, encoder,
instance_interactor}`, `frozen_bn/backbone` or `batch_stats/encoder` where
the config's norms have them), `--out.json` (metadata: `format`, `covers`
= those subtrees, whole, `initialised`, `backbone_norm`) and
`--out.report.txt`, plus `<stem>.ap.json`: box AP@0.5 per class (person and
each object) on held-out corpus images, with instance counts. The object
classifier comes along: its columns are trained on every object class.
Deterministic for a seed.

`ensure_synthetic_detector` makes it once per workdir for `main`
(`config.init.synthetic_detector_steps`).
"""

import functools
import json
import os
import time
from typing import Any, Dict, List, Sequence, Tuple

from absl import flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from ki2hoi_jax import cli
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_detection as corpus_lib
from ki2hoi_jax.evaluation import box_ap
from ki2hoi_jax.models import instance_detector
from ki2hoi_jax.train import detector_loss
from ki2hoi_jax.weights import convert_detr
from ki2hoi_jax.weights import pretrained

Array = jnp.ndarray
# The `config.model` fields that shape the detector or its pretraining,
# recorded in the AP figure: a workdir's detector made with other values is
# made again.
DETECTOR_MODEL_FIELDS = (
    "backbone_depth", "backbone_width", "backbone_norm", "backbone_dilation",
    "backbone_frozen_stages", "backbone_mask_padding", "d_model", "num_heads",
    "dim_feedforward", "dropout", "num_queries", "anchor_queries",
    "instance_decoder_layers", "encoder_type", "encoder_layers",
    "encoder_norm", "encoder_mlp_ratio", "roi_size", "roi_sampling_ratio")
# Optimizer settings of every pretraining (the CLI's defaults, and `main`'s).
DEFAULT_BATCH_SIZE = 8
DEFAULT_LEARNING_RATE = 1e-3


# ------------------------------------------------------------------ batches


def batch_arrays(corpus: corpus_lib.DetectionCorpus, idx: np.ndarray,
                 flip: np.ndarray) -> Tuple[np.ndarray, ...]:
  """Images, masks and targets of corpus images `idx`, flipped where `flip`.

  Returns:
    (image [B, S, S, 3], mask [B, S, S], targets dict: normalised cxcywh
    boxes [B, G, 4], masks [B, G], `object_labels` [B, G]).
  """
  images = corpus.images[idx].copy()
  sizes = corpus.sizes[idx]
  boxes = {k: getattr(corpus, k)[idx].copy()
           for k in ("person_boxes", "object_boxes")}
  for j in np.flatnonzero(flip):
    h, w = sizes[j]
    images[j, :h, :w] = images[j, :h, :w][:, ::-1]
    for b in boxes.values():  # As transforms.transform_boxes flips.
      b[j] = np.stack([w - b[j, :, 2], b[j, :, 1], w - b[j, :, 0],
                       b[j, :, 3]], -1)
  image, mask = corpus_lib.normalise(images, sizes)
  hw = sizes[:, None, ::-1].astype(np.float32)  # [B, 1, 2] (w, h)
  targets = {"object_labels": corpus.object_labels[idx]}
  for k, b in boxes.items():
    centre = (b[..., :2] + b[..., 2:]) / 2 / hw
    size = (b[..., 2:] - b[..., :2]) / hw
    targets[k] = np.concatenate([centre, size], -1).astype(np.float32)
  targets["person_mask"] = corpus.person_mask[idx]
  targets["object_mask"] = corpus.object_mask[idx]
  return image, mask, targets


# ----------------------------------------------------------------- training


# Compiled once per detector (modules compare and hash by their fields);
# the one-off init without XLA's backend optimisations (30 s -> 10 s for
# the tests' tiny model on 2 CPU cores).
@functools.partial(jax.jit, static_argnums=(0, 2), compiler_options={
    "xla_backend_optimization_level": 0})
def _init(detector, key, image_size: int):
  image = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return detector.init(key, image, image[..., 0] == 0)


@functools.partial(jax.jit, static_argnums=0)
def _apply(detector, variables, image, mask):
  return detector.apply(variables, image, mask, train=False)


def init_variables(config, seed: int, image_size: int) -> Dict[str, Any]:
  """Fresh detector variables of `config`'s model (seed `seed`)."""
  detector = instance_detector.build_detector(config)
  return jax.device_get(dict(_init(detector, jax.random.PRNGKey(seed),
                                   image_size)))


def pretrain(config, corpus: corpus_lib.DetectionCorpus, *, steps: int,
             batch_size: int, seed: int, learning_rate: float,
             progress: bool = False) -> Tuple[Dict[str, Any], List[float]]:
  """Trains the detector of `config` from scratch on the corpus.

  Returns:
    (variables {'params', and 'batch_stats' / 'frozen_bn' where the model
    has them}, the loss of every step).
  """
  detector = instance_detector.build_detector(config)
  variables = init_variables(config, seed, corpus.images.shape[1])
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  mutable = ["batch_stats"] if "batch_stats" in state else []
  opt = config.optimizer
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, steps // 20), max(2, steps))
  tx = optax.adamw(schedule, weight_decay=float(opt.weight_decay),
                   mask=jax.tree_util.tree_map(lambda x: x.ndim >= 2, params))
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(opt.grad_clip_norm)), tx)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, state, opt_state, image, mask, targets, rng):
    def loss_fn(p):
      out = detector.apply({"params": p, **state}, image, mask, train=True,
                           mutable=mutable, rngs={"dropout": rng})
      out, new_state = out if mutable else (out, {})
      loss, _ = detector_loss.detection_loss(out, targets, config.loss)
      return loss, new_state
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, {**state, **new_state}, opt_state, loss

  order_rng = np.random.default_rng([seed, 7])
  n = len(corpus)
  order, pos = order_rng.permutation(n), 0
  key = jax.random.PRNGKey(seed)
  loss_history = []
  bar = tqdm.trange(steps, desc="detector pretrain", disable=not progress)
  for i in bar:
    if pos + batch_size > n:
      order, pos = order_rng.permutation(n), 0
    idx = np.sort(order[pos:pos + batch_size])
    pos += batch_size
    image, mask, targets = batch_arrays(
        corpus, idx, order_rng.uniform(size=len(idx)) < 0.5)
    params, state, opt_state, loss = step(
        params, state, opt_state, image, mask, targets,
        jax.random.fold_in(key, i))
    loss_history.append(float(loss))
    bar.set_postfix(loss=f"{loss_history[-1]:.3f}")
  return jax.device_get({"params": params, **state}), loss_history


# --------------------------------------------------------------- evaluation


def predict(config, variables: Dict[str, Any],
            corpus: corpus_lib.DetectionCorpus, batch_size: int = 16
            ) -> Dict[str, np.ndarray]:
  """Last-layer detections of every corpus image.

  Returns:
    `person_boxes`, `object_boxes` [N, Q, 4] pixel xyxy, `person_score`
    [N, Q] (p(person)), `object_score` [N, Q] and `object_class` [N, Q]
    (the most probable object class and its probability, DETR's rule).
  """
  detector = instance_detector.build_detector(config)
  parts = []
  for i in range(0, len(corpus), batch_size):
    idx = np.arange(i, min(i + batch_size, len(corpus)))
    image, mask, _ = batch_arrays(corpus, idx, np.zeros(len(idx), bool))
    out = jax.device_get(_apply(detector, variables, image, mask))
    parts.append({k: np.asarray(v[-1]) for k, v in out.items()})
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  hw = corpus.sizes[:, None, ::-1].astype(np.float32)  # [N, 1, 2] (w, h)

  def pixels(b):
    return np.concatenate([(b[..., :2] - b[..., 2:] / 2) * hw,
                           (b[..., :2] + b[..., 2:] / 2) * hw], -1)

  human = jax.nn.softmax(out["human_logits"], -1)[..., 0]
  obj = np.asarray(jax.nn.softmax(out["obj_logits"], -1))[..., :-1]
  return {"person_boxes": pixels(out["sub_boxes"]),
          "object_boxes": pixels(out["obj_boxes"]),
          "person_score": np.asarray(human),
          "object_score": obj.max(-1), "object_class": obj.argmax(-1)}


def ap_figure(config, variables: Dict[str, Any],
              corpus: corpus_lib.DetectionCorpus) -> Dict[str, Any]:
  """Box AP@0.5 (%) per class on the corpus (`evaluation/box_ap.py`).

  People are scored from the human queries, objects from the object
  queries (each query one detection of its most probable class).

  Returns:
    {'person': {'ap', 'max_recall', 'num_instances', 'num_detections'},
    'objects': {name: the same} for each object with instances,
    'mean_object_ap', 'num_held_out_images'}.
  """
  det = predict(config, variables, corpus)
  n, q = det["person_score"].shape
  det_image = np.repeat(np.arange(n), q)

  def ap(gt_boxes, gt_mask, gt_class, boxes, score, cls, num_classes):
    gi, gj = np.nonzero(gt_mask)
    return box_ap.box_ap(gi, gt_class[gi, gj], gt_boxes[gi, gj], det_image,
                         cls.reshape(-1), boxes.reshape(-1, 4),
                         score.reshape(-1), num_classes)

  person = ap(corpus.person_boxes, corpus.person_mask,
              np.zeros_like(corpus.object_labels), det["person_boxes"],
              det["person_score"], np.zeros((n, q), np.int64), 1)
  names = metadata.hico().objects
  objects = ap(corpus.object_boxes, corpus.object_mask, corpus.object_labels,
               det["object_boxes"], det["object_score"],
               det["object_class"], len(names))
  objects = {names[c]: r for c, r in sorted(objects.items())}
  return {"person": person.get(0, {}), "objects": objects,
          "mean_object_ap": float(np.mean([r["ap"] for r in
                                           objects.values()])),
          "num_held_out_images": n}


def format_figure(figure: Dict[str, Any]) -> str:
  """The AP figure as a small table."""
  lines = ["Detector box AP@0.5 on held-out images   AP %   recall %  "
           "instances"]
  rows = [("person", figure["person"])] + list(figure["objects"].items())
  for name, r in rows:
    lines.append(f"  {name:<38} {r['ap']:5.1f} {r['max_recall']:9.1f} "
                 f"{r['num_instances']:10d}")
  lines.append(f"  {'mean over the objects':<38} "
               f"{figure['mean_object_ap']:5.1f}")
  return "\n".join(lines)


# ------------------------------------------------------------------ writing


def ap_path(out: str) -> str:
  """`<out without .msgpack>.ap.json`."""
  stem = out[:-len(".msgpack")] if out.endswith(".msgpack") else out
  return stem + ".ap.json"


def write_checkpoint(config, variables: Dict[str, Any], out: str,
                     source: str) -> Dict[str, Any]:
  """Writes the variables in the `convert_detr` format (module docstring).

  Returns:
    The metadata (also in `out.json`), with the report summary under
    'report'.

  Raises:
    ValueError: a tensor has no counterpart of its shape in the KI2HOI of
      `config` (the detector and the model disagree).
  """
  flat = {k: np.asarray(v) for k, v in pretrained.flatten(variables).items()}
  target = convert_detr.target_shapes(config)
  kept, skipped = convert_detr.select(flat, target)
  if skipped:
    raise ValueError(f"Detector tensors without a KI2HOI counterpart: "
                     f"{skipped}")
  meta = {
      "format": convert_detr.FORMAT,
      "source": source,
      "covers": sorted({"/".join(n.split("/")[:2]) for n in kept}),
      "initialised": sorted(kept),
      "skipped": {},
      "backbone_norm": str(config.model.backbone_norm),
  }
  pretrained.save_checkpoint(out, pretrained.unflatten(kept), meta)
  with open(out + ".report.txt", "w") as f:
    f.write(convert_detr.format_report(target, list(kept), {}, {}))
  meta["report"] = convert_detr.format_report(target, list(kept), {}, {},
                                              details=False)
  return meta


def run(config, out: str, *, steps: int, batch_size: int, seed: int,
        num_images: int, num_held_out: int = 200,
        learning_rate: float = DEFAULT_LEARNING_RATE, progress: bool = True
        ) -> Dict[str, Any]:
  """Corpus, pretraining, AP figure, files (the CLI's work).

  Args:
    config: a run config (`model`, `loss`, `optimizer.weight_decay`,
      `optimizer.grad_clip_norm`, `dataset.synthetic_image_size`,
      `dataset.synthetic_world`, `dataset.train_short_sides`,
      `dataset.eval_short_side`, `dataset.max_size`).
    out: output `.msgpack` path.
    steps: optimizer steps.
    batch_size: images per step.
    seed: corpus, init and batch-order seed.
    num_images: renderer images of the training corpus.
    num_held_out: renderer images of the AP figure.
    learning_rate: peak learning rate.
    progress: progress bars.

  Returns:
    The AP figure and the run's settings (also written to `ap_path(out)`).
  """
  d = config.dataset
  start = time.time()
  corpus = corpus_lib.detection_corpus(
      seed, corpus_lib.DETECTOR_SPLIT, num_images,
      int(d.synthetic_image_size), tuple(d.train_short_sides),
      int(d.max_size), progress, d.synthetic_world)
  held_out = corpus_lib.detection_corpus(
      seed, corpus_lib.DETECTOR_HELD_OUT_SPLIT, num_held_out,
      int(d.synthetic_image_size), (int(d.eval_short_side),),
      int(d.max_size), progress, d.synthetic_world)
  variables, loss_history = pretrain(
      config, corpus, steps=steps, batch_size=batch_size, seed=seed,
      learning_rate=learning_rate, progress=progress)
  figure = ap_figure(config, variables, held_out)
  figure.update(steps=steps, batch_size=batch_size, seed=seed,
                num_images=num_images, learning_rate=learning_rate,
                image_size=int(d.synthetic_image_size),
                world=d.synthetic_world,
                train_short_sides=[int(s) for s in d.train_short_sides],
                max_size=int(d.max_size),
                model=detector_model(config),
                final_loss=loss_history[-1],
                seconds=round(time.time() - start, 1))
  write_checkpoint(config, variables, out, (
      f"ki2hoi_jax.train.pretrain_detector: synthetic detection corpus, "
      f"seed {seed}, {num_images} images, {steps} steps"))
  with open(ap_path(out), "w") as f:
    json.dump(figure, f, indent=1)
  return figure


# ----------------------------------------------------------------- workdir


def detector_model(config) -> Dict[str, Any]:
  """`config.model`'s `DETECTOR_MODEL_FIELDS` (JSON values)."""
  return {k: config.model[k] for k in DETECTOR_MODEL_FIELDS}


def _wanted_settings(config) -> Dict[str, Any]:
  """The settings a workdir's synthetic detector must have been made with."""
  d = config.dataset
  return {"steps": int(config.init.synthetic_detector_steps),
          "num_images": int(config.init.synthetic_detector_images),
          "seed": int(config.seed),
          "batch_size": DEFAULT_BATCH_SIZE,
          "learning_rate": DEFAULT_LEARNING_RATE,
          "image_size": int(d.synthetic_image_size),
          "world": d.synthetic_world,
          "train_short_sides": [int(s) for s in d.train_short_sides],
          "max_size": int(d.max_size),
          "model": detector_model(config)}


def stale_settings(config, path: str) -> List[str]:
  """Why the synthetic detector at `path` does not serve `config` ([]: it does).

  Its settings (`_wanted_settings`) are read from `ap_path(path)`, written
  last: a file left by a killed run reads 'missing'
  (`pretrained.stale_settings`).
  """
  return pretrained.stale_settings(ap_path(path), _wanted_settings(config),
                                   f"synthetic detector {path}")


def ensure_synthetic_detector(config, workdir: str) -> None:
  """Points `init.detr_checkpoint` at the workdir's synthetic detector.

  With `config.init.synthetic_detector_steps > 0` and an empty
  `init.detr_checkpoint` (a user's own checkpoint always wins), the detector
  is pretrained once into `<workdir>/detector/synthetic_detr.msgpack` (`run`,
  seed `config.seed`) and reused by every later mode and run; one left
  incomplete by a killed run, or made with other settings
  (`stale_settings`), is made again. Other processes of a multi-host run
  wait for process 0.

  Args:
    config: the run config (changed in place).
    workdir: the run's workdir.
  """
  init = config.init
  if init.detr_checkpoint or init.synthetic_detector_steps <= 0:
    return
  path = os.path.join(workdir, "detector", "synthetic_detr.msgpack")

  def make():
    figure = run(config, path, steps=int(init.synthetic_detector_steps),
                 batch_size=DEFAULT_BATCH_SIZE, seed=int(config.seed),
                 num_images=int(init.synthetic_detector_images),
                 progress=bool(config.progress_bar))
    print(format_figure(figure), flush=True)

  pretrained.make_once(ap_path(path), _wanted_settings(config),
                       f"synthetic detector {path}", make)
  init.detr_checkpoint = path


# --------------------------------------------------------------------- CLI


def define_flags(flag_values: flags.FlagValues,
                 argv: Sequence[str] = ()) -> None:
  """The command line's flags (`ki2hoi_jax.cli`); `argv` for the config's."""
  flags.DEFINE_string("out", None, "Output .msgpack path.", required=True,
                      flag_values=flag_values)
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                             "demo.py"),
      "Config file whose detector is trained (--config.field=value "
      "overrides it).", flag_values=flag_values, lock_config=True,
      sys_argv=list(argv))
  flags.DEFINE_integer("steps", None, "Optimizer steps (default: the "
                       "config's init.synthetic_detector_steps).",
                       flag_values=flag_values)
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Images per step.",
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Corpus, init and batch-order seed.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_images", None, "Renderer images of the corpus "
                       "(default: the config's "
                       "init.synthetic_detector_images).",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_held_out", 200,
                       "Held-out renderer images of the AP figure.",
                       flag_values=flag_values)
  flags.DEFINE_float("learning_rate", DEFAULT_LEARNING_RATE,
                     "Peak learning rate.",
                     flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(
      argv, lambda flag_values: define_flags(flag_values, argv), __doc__)
  config = args.config
  steps = args.steps or int(config.init.synthetic_detector_steps)
  if steps <= 0:
    raise ValueError("--steps is not given and the config has "
                     "init.synthetic_detector_steps 0: pass --steps N")
  figure = run(config, args.out, steps=steps,
               batch_size=args.batch_size, seed=args.seed,
               num_images=(args.num_images
                           or int(config.init.synthetic_detector_images)),
               num_held_out=args.num_held_out,
               learning_rate=args.learning_rate)
  print(format_figure(figure))
  print(f"Wrote {args.out}, {pretrained.metadata_path(args.out)}, "
        f"{args.out}.report.txt and {ap_path(args.out)} "
        f"({figure['seconds']} s)")
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.train.pretrain_detector`."""
  cli.run(main, user_errors=(OSError, ValueError))


if __name__ == "__main__":
  entry_point()
