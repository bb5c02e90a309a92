"""Orbax checkpoints of the training state, the latest few and the best.

Layout under the workdir:

  config.json                      the run's config (written by process 0)
  checkpoints/<step>/state         {step, params, batch_stats, opt_state, rng}
  checkpoints/<step>/config        the config as JSON
  checkpoints_best/<step>/...      the same, for the best validation mAP

`checkpoints/` keeps the last `config.keep_checkpoints`; `checkpoints_best/`
keeps one, replaced only when the mAP improves (its value is stored as the
checkpoint's orbax metrics, so it survives restarts).

The state is saved as host numpy arrays (the first replica of the pmapped
state): orbax writes replicated numpy arrays from process 0 only, while every
process takes part in the save (orbax synchronises the processes), which is
the correct multi-host protocol for replicated data. Saving is synchronous, so
a checkpoint that `latest_step()` reports is complete (orbax writes into a
temporary folder and renames it when done; a killed save leaves no step).
"""

import json
import os
from typing import Any, Dict, Mapping, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

BEST_METRIC = "mAP"


def _to_numpy(tree: Any) -> Any:
  """Host numpy copies of every leaf (0-d arrays for scalars)."""
  return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def config_to_json(config) -> str:
  """JSON text of an ml_collections config."""
  to_dict = getattr(config, "to_dict", None)
  return json.dumps(to_dict() if to_dict else dict(config), indent=2,
                    sort_keys=True, default=str)


def write_config(workdir: str, config) -> None:
  """Writes workdir/config.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config_to_json(config))
  os.replace(path + ".tmp", path)


class Checkpointer:
  """Latest-k and best-by-mAP orbax checkpoint managers of one workdir.

  Attributes:
    latest: manager of `workdir/checkpoints` (max `keep` steps).
    best: manager of `workdir/checkpoints_best` (one step).
  """

  def __init__(self, workdir: str, keep: int = 3):
    options = dict(create=True, enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=int(keep),
                                             **options))
    self.best = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints_best")),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: float(m[BEST_METRIC]),
            best_mode="max", **options))

  @staticmethod
  def _args(state: Mapping[str, Any], config) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardSave(_to_numpy(dict(state))),
        config=ocp.args.JsonSave(json.loads(config_to_json(config))))

  def save(self, step: int, state: Mapping[str, Any], config) -> bool:
    """Saves `state` (a dict of host or device trees) at `step`.

    Returns:
      False when `step` was already saved.
    """
    if step in self.latest.all_steps():
      return False
    self.latest.save(step, args=self._args(state, config), force=True)
    self.latest.wait_until_finished()
    logging.info("Saved checkpoint of step %d in %s.", step,
                 self.latest.directory)
    return True

  def best_value(self) -> Optional[float]:
    """The best mAP saved so far, or None."""
    step = self.best.best_step()
    if step is None:
      return None
    metrics = self.best.metrics(step)
    return None if not metrics else float(metrics[BEST_METRIC])

  def save_if_best(self, step: int, state: Mapping[str, Any], config,
                   value: float) -> bool:
    """Saves into checkpoints_best when `value` beats the best so far."""
    best = self.best_value()
    if not np.isfinite(value) or (best is not None and value <= best):
      return False
    if step in self.best.all_steps():
      return False
    self.best.save(step, args=self._args(state, config),
                   metrics={BEST_METRIC: float(value)}, force=True)
    self.best.wait_until_finished()
    logging.info("New best %s %.4f at step %d.", BEST_METRIC, value, step)
    return True

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def restore(self, target: Mapping[str, Any], step: Optional[int] = None,
              best: bool = False) -> Dict[str, Any]:
    """Restores the state saved at `step` (default: latest, or the best).

    Args:
      target: a state dict with the structure, shapes and dtypes to restore
        (e.g. a freshly initialised state); its values are not used.
      step: which step; None = the latest (or best with `best`).
      best: read from checkpoints_best.

    Returns:
      The restored state dict of host numpy arrays.

    Raises:
      FileNotFoundError: no checkpoint.
    """
    manager = self.best if best else self.latest
    if step is None:
      step = manager.best_step() if best else manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype),
        dict(target))
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return dict(restored["state"])

  def close(self) -> None:
    self.latest.close()
    self.best.close()
