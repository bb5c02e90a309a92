r"""Predict HOI triplets on image files with a trained KI2HOI checkpoint.

  python -m ki2hoi_jax.inference.predict --config=configs/uv.py \
      --checkpoint=/tmp/uv \
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
(`ki2hoi_jax/inference/open_vocabulary.py`, README "Open vocabulary").

Each image is decoded and prepared exactly as in evaluation
(`inference/images.py`: eval resize, normalisation, bucket padding, the CLIP
view; EXIF rotation, alpha, 16-bit and greyscale handled). The model runs
jitted on a batch of one (one compilation per padded shape), then
post-processing as evaluation (`config.inference`: score fusion, top-k
candidates, per-class triplet NMS, all on the fused score), then
`--score_threshold` (on the confidence `score`) and `--top_k`.

Output per image, in `--out` (`<stem>_<n>` when two inputs share a stem):

* `<stem>.json`:
    {"image": "<input path as given>",
     "width": int, "height": int,          # of the (upright) input image
     "triplets": [                         # descending rank_score, <= top_k,
       {"human_box": [x1, y1, x2, y2],     #   all with score >= threshold
        "object_box": [x1, y1, x2, y2],    # pixels of the input image,
        "object": "bicycle",               #   clipped to it (floats)
        "verb": "ride",
        "score": 0.71,                     # confidence, in [0, 1]
        "rank_score": 2.55,                # fused score (ranking, NMS)
        "pair": 3}, ...]}                  # query index of the pair
  `score` is the confidence `S_h * S_o * S_verb`: the human probability, the
  object-class probability (softmax) and the interaction probability (sigmoid
  of the interaction logit), so a verb with interaction probability p on a
  confident pair scores about p; `--score_threshold` applies to it.
  `rank_score` is the raw fused score of `config.inference.score_fusion`
  (paper eq. 18 'sum': `S_h + S_o + S_verb`, in [0, 3]; 'genvlkt' in [0, 2];
  'product' equals `score`) that ranks the triplets and drives the NMS, as in
  evaluation. Triplets with the same `pair` come from one model query and
  share both boxes. `verb` / `object` are class names of the training dataset
  (e.g. "sit_on", "dining_table") or the user's open-vocabulary names; for a
  plain prompt of a prompts file `verb` is the prompt text.
* `<stem>.png`: the input image (upscaled to a short side of at least 480 px
  so labels stay legible) with the triplets drawn by
  `drawing.draw_triplets`: boxes and one label block per human-object pair,
  "person - bicycle" over one "ride 0.71" line (`score`) per verb.

A file that is missing or is not a readable image is reported with its path
(logged as an error and listed in the final summary); the other images still
finish, and the command exits with status 1.

From `python -m ki2hoi_jax.main` with `config.mode='predict'` (or 'all'),
`predict_from_config(config, workdir)` predicts `config.predict.images` (or the
first test images of the dataset) with the workdir's checkpoint into
`<workdir>/predictions/`.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from ki2hoi_jax import cli
from ki2hoi_jax.checkpoints import restore
from ki2hoi_jax.config_lib import saved as saved_config
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.inference import drawing
from ki2hoi_jax.inference import images as image_lib
from ki2hoi_jax.inference import predictor as predictor_lib

PNG_MIN_SHORT_SIDE = 480  # Annotated PNGs of smaller images are upscaled.


class PredictError(RuntimeError):
  """Some images could not be predicted (the others were written)."""


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


def predict_files(predictor: predictor_lib.Predictor, images: Sequence[str],
                  out_dir: str,
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
      image, pixels = image_lib.load_image(path)
      triplets = predictor.predict(pixels)
    except image_lib.ImageLoadError as e:
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
    drawing.draw_triplets(image, triplets, max_triplets=len(triplets),
                            min_short_side=PNG_MIN_SHORT_SIDE).save(png_path)
    summary.written.append({"image": path, "json": json_path,
                            "png": png_path,
                            "num_triplets": len(triplets)})
    logging.info("%s: %d triplet(s) in %.2fs -> %s", path, len(triplets),
                 time.time() - start, json_path)
  return summary


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
  # Flag values are checked before any work (config values by `validate`).
  if score_threshold is not None:
    validation.check_unit_interval("score_threshold", score_threshold)
  if top_k is not None:
    validation.check_positive_int("top_k", top_k)
  restored = restore.restore_checkpoint(checkpoint, which)
  logging.info("Restored step %d from %s.", restored.step, restored.directory)
  if config is None:
    if restored.config is None:
      raise FileNotFoundError(f"no config saved with {restored.directory}; "
                              "pass --config")
    config = saved_config.config_from_saved(restored.config)
  elif restored.config is not None:
    # Another model than the checkpoint's stops here with one line; other
    # differences (dataset paths, ...) are logged.
    saved_config.check_saved_config(config, restored.config,
                                    restored.directory)
    saved_config.check_config_matches(config, restored.config)
  predictor = predictor_lib.build_predictor(
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
  return image_lib.list_images(folder, limit)


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


def define_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """The command line's flags (`ki2hoi_jax.cli`); `argv` for --config.x=y."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py); default: the "
      "config saved with the checkpoint.", flag_values=flag_values,
      lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string("checkpoint", None, "Training workdir, checkpoints "
                      "folder or checkpoint step folder.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_multi_string("images", [], "Image files (more may follow as "
                            "arguments).", flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output folder.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_enum("which", "auto", restore.CHECKPOINT_CHOICES,
                    "Checkpoint of a workdir: best if any (auto), best or "
                    "latest.", flag_values=flag_values)
  flags.DEFINE_float("score_threshold", None, "Minimum confidence (the "
                     "triplet's 'score', S_h * S_o * S_verb; default "
                     "config.predict.score_threshold).",
                     flag_values=flag_values)
  flags.DEFINE_integer("top_k", None, "Triplets per image (default "
                       "config.predict.top_k).", flag_values=flag_values)
  flags.DEFINE_string("verbs", None, "Open vocabulary: comma-separated "
                      "verbs.", flag_values=flag_values)
  flags.DEFINE_string("objects", None, "Open vocabulary: comma-separated "
                      "objects.", flag_values=flag_values)
  flags.DEFINE_string("prompts_file", None, "Open vocabulary: one "
                      "'verb,object' or plain prompt per line.",
                      flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Runs the CLI (argv[0]: its name); returns the exit status.

  The status is 1 when any image failed, 2 on a bad flag, config or file.
  """
  args, more_images = cli.parse_flags_and_arguments(
      argv, lambda flag_values: define_flags(flag_values, argv), __doc__)
  images = list(args.images) + more_images
  if not images:
    print("error: no images (use --images a.jpg b.png ...)", file=sys.stderr)
    return 2
  config = args.config
  pick = lambda name, default: (  # pylint: disable=g-long-lambda
      args[name].value if args[name].value is not None else default)
  try:
    if config is not None:
      validation.validate(config)
    p = config.predict if config is not None else None
    summary = run(
        config, args.checkpoint, images, args.out, which=args.which,
        verbs=pick("verbs", p.verbs if p else ""),
        objects=pick("objects", p.objects if p else ""),
        prompts_file=pick("prompts_file", p.prompts_file if p else ""),
        score_threshold=args.score_threshold, top_k=args.top_k)
  except (FileNotFoundError, ValueError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary.text())
  return 1 if summary.failed else 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.inference.predict` and `ki2hoi-predict`."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from ki2hoi_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.hide_accelerators_from_tensorflow()
  cli.run(main)


if __name__ == "__main__":
  entry_point()
