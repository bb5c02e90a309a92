r"""Command-line entry point of ki2hoi_jax.

  python -m ki2hoi_jax.main --config=configs/uv.py --workdir=/tmp/uv \
      [--config.field=value ...]

`config.mode` picks what runs: 'train' (resumes from the workdir when it holds
a checkpoint), 'eval' (evaluates the best or latest checkpoint of the workdir),
'predict' (annotated triplets for `config.predict.images`) or 'all' (train,
then eval, then predict; what configs/demo.py does). Any config leaf can be
overridden with --config.<path>=<value>; a misspelled path is an error.

Start-up happens once per run, in `train.startup.started`: the config is
validated, and checked against the one saved in the workdir (another model in
a workdir with checkpoints stops with one line naming the field), distributed
JAX is initialised, and train, eval and all hold `<workdir>/.lock`
(`checkpoints.workdir_lock`) for the whole run: a second run in the same
workdir stops at once with an error naming the first (PID, host, start time).
Predict only reads checkpoints and writes `predictions/`, so it takes no lock.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, TensorBoard summaries, "
    "evaluation results and predictions (synthetic data too for the demo).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of Orbax/TensorFlow Datasets; keeps their warnings."""

  _PATHS = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return not any(p in record.pathname for p in self._PATHS)


def run(config, workdir: str) -> None:
  """Starts a run (`startup.started`) and runs `config.mode` in `workdir`.

  Modes other than 'predict' hold the workdir lock for the whole run.

  Raises:
    ConfigError: a bad config value, or a config that contradicts the
      workdir's saved one.
    WorkdirLockedError: another run holds `workdir`.
  """
  # Imported here so that `--help` stays fast.
  from ki2hoi_jax.train import startup  # pylint: disable=g-import-not-at-top
  with startup.started(config, workdir):
    if config.mode != "predict":
      # A wrong dataset.root is reported now, not after minutes of CLIP
      # pretraining.
      from ki2hoi_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
      input_pipeline.dataset_root(config, workdir)
      _check_official_files(config, workdir)
    from ki2hoi_jax.clip import pretrain  # pylint: disable=g-import-not-at-top
    pretrain.ensure_synthetic_clip(config, workdir)  # init.synthetic_clip_steps
    if config.mode in ("train", "all"):  # Only training starts from it.
      from ki2hoi_jax.train import pretrain_detector  # pylint: disable=g-import-not-at-top
      # init.synthetic_detector_steps
      pretrain_detector.ensure_synthetic_detector(config, workdir)
    _run_modes(config, workdir)


def _check_official_files(config, workdir: str) -> None:
  """`eval_protocol='official'` needs anno_bbox.mat: say so before training."""
  if config.eval_protocol != "official":
    return
  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.config_lib import validation
  from ki2hoi_jax.train import eval_hook
  # pylint: enable=g-import-not-at-top
  anno_bbox, _ = eval_hook.official_files(config, workdir)
  if not os.path.isfile(anno_bbox):
    raise validation.ConfigError(
        f"config.eval_protocol='official' needs {anno_bbox} (HICO-DET's "
        "anno_bbox.mat; docs/datasets.md section 8)")


def _run_modes(config, workdir: str) -> None:
  modes = ("train", "eval", "predict") if config.mode == "all" else (
      config.mode,)
  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.train import eval_hook
  from ki2hoi_jax.train import trainer
  # pylint: enable=g-import-not-at-top
  summary = [f"Workdir: {os.path.abspath(workdir)}"]
  trained = None
  for mode in modes:
    logging.info("=== mode: %s (workdir %s)", mode, workdir)
    if mode == "train":
      trained = trainer.train_and_evaluate(config, workdir)
      summary.append(f"  checkpoints:  {workdir}/checkpoints, "
                     f"{workdir}/checkpoints_best (step {trained['step']})")
      summary.append(f"  TensorBoard:  tensorboard --logdir {workdir}")
      summary.append(f"  evaluation:   {workdir}/eval/step_{trained['step']}"
                     "/{predictions,metrics}.json")
      if trained.get("eval_untrained") is not None:
        summary.append("  untrained model: " + eval_hook.headline(
            config, trained["eval_untrained"]))
      summary.append("  trained model:   " + eval_hook.headline(
          config, trained["eval"]))
    elif mode == "eval":
      if trained is not None and trained["eval"] is not None:
        # `all`: the train mode has just evaluated its final checkpoint.
        print(f"Evaluation at step {trained['step']}:\n"
              f"{eval_hook.metrics_table(config, trained['eval'])}")
        continue
      metrics = trainer.evaluate(config, workdir)
      summary.append("  evaluation: " + eval_hook.headline(config, metrics))
    elif mode == "predict":
      from ki2hoi_jax.inference import predict  # pylint: disable=g-import-not-at-top
      result = predict.predict_from_config(config, workdir)
      summary.append(f"  predictions:  {result.out_dir} "
                     f"({len(result.written)} images, JSON + annotated PNG)")
  print("\n".join(["", "=" * 72, "Summary"] + summary + ["=" * 72]))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.get_absl_handler().setFormatter(
      std_logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                            "%H:%M:%S"))
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from ki2hoi_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.hide_accelerators_from_tensorflow()
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, _user_errors()):
      logging.error("%s", e)
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    raise  # An unexpected error keeps its traceback.


def _user_errors() -> tuple:
  """Errors a user causes (bad config, files, data): one line, exit 2."""
  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.checkpoints import manager
  from ki2hoi_jax.checkpoints import workdir_lock
  from ki2hoi_jax.config_lib import validation
  from ki2hoi_jax.data import annotations
  from ki2hoi_jax.evaluation import hico_official_files
  from ki2hoi_jax.evaluation import vocabulary
  from ki2hoi_jax.inference import predict
  from ki2hoi_jax.weights import pretrained
  # pylint: enable=g-import-not-at-top
  return (validation.ConfigError, annotations.DatasetError,
          vocabulary.VocabularyError, pretrained.CheckpointMismatchError,
          manager.CheckpointError, workdir_lock.WorkdirLockedError,
          predict.PredictError, hico_official_files.OfficialFileError,
          FileNotFoundError, FloatingPointError)


def _parse_flags(argv):
  """Parses flags; a bad --config or --config.<path> exits with a short error."""
  overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
  if overrides and not any(a == "--config" or a.startswith("--config=")
                           for a in argv[1:]):
    print(f"error: {overrides[0]} overrides a field of the experiment config, "
          "but no --config was given (e.g. --config=configs/demo.py "
          f"{overrides[0]}=...).", file=sys.stderr)
    sys.exit(2)
  try:
    args = flags.FLAGS(argv)
    _ = _CONFIG.value.mode  # The config file is loaded lazily; load it now.
    return args
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError,
          OSError) as e:
    message = str(e.args[0] if e.args else e).strip("'\"")
    message = message.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    print(f"error: {message}\nRun `python -m ki2hoi_jax.main --help` for the "
          "flags; every config field is listed with a comment in "
          "ki2hoi_jax/config_lib/base.py.", file=sys.stderr)
    sys.exit(2)


def entry_point() -> None:
  """`python -m ki2hoi_jax.main` and the `ki2hoi` console script."""
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  entry_point()
