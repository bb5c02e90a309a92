"""Orbax checkpoints of the training state, the latest few and the best.

Layout under the workdir:

  config.json                      the run's config (written by process 0)
  checkpoints/<step>/state         {step, params, batch_stats, opt_state, rng}
  checkpoints/<step>/config        the config as JSON
  checkpoints_best/<step>/...      the same, for the best validation mAP
  checkpoints_corrupt/<step>       unreadable steps set aside on resume
  .lock                            one run per workdir (`workdir_lock`)

`checkpoints/` keeps the last `config.keep_checkpoints`; `checkpoints_best/`
keeps one, replaced only when the mAP improves (its value is stored as the
checkpoint's orbax metrics, so it survives restarts).

The state is saved as host numpy arrays (the first replica of the pmapped
state): orbax writes replicated numpy arrays from process 0 only, while every
process takes part in the save (orbax synchronises the processes), which is
the correct multi-host protocol for replicated data. Saving is synchronous, so
a checkpoint that `latest_step()` reports is complete (orbax writes into a
temporary folder and renames it when done; a killed save leaves no step).

Failures: a save that fails (a full disk, a quota, a read-only file system)
raises one `CheckpointSaveError` naming the step folder and the OS-level cause
(orbax's own threads log their tracebacks first); the partial temporary folder
is removed and the checkpoints saved before stay intact. Resuming from a
latest checkpoint that cannot be read (a truncated or deleted file) logs one
warning, moves that step folder to `checkpoints_corrupt/` and restores the
newest intact older step; `CheckpointError` when none is intact.
"""

import errno
import glob
import json
import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

BEST_METRIC = "mAP"
# OS errors that tensorstore reports as text inside a ValueError.
_OS_CAUSES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


class CheckpointError(RuntimeError):
  """A checkpoint could not be read or written; the message says which, why."""


class CheckpointSaveError(CheckpointError):
  """A save failed. Attributes: `errno`, the OS error number or None."""

  def __init__(self, message: str, os_errno: Optional[int] = None):
    super().__init__(message)
    self.errno = os_errno


def error_summary(exc: BaseException, limit: int = 300) -> str:
  """'Type: first words of the message' on one line (no tensorstore spec)."""
  text = " ".join(str(exc).split(" [tensorstore_spec=")[0].split())
  if len(text) > limit:
    text = text[:limit - 3] + "..."
  return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _chain(exc: BaseException) -> List[BaseException]:
  out, seen = [], set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    out.append(exc)
    exc = exc.__cause__ or exc.__context__
  return out


def os_error_cause(exc: BaseException) -> Tuple[Optional[int], str]:
  """(errno, text) of the OS error behind `exc`, else (None, its summary).

  The text reads 'No space left on device (ENOSPC)'. The error is the first
  OSError in the `__cause__`/`__context__` chain, else one of `_OS_CAUSES`
  named in a message (tensorstore reports a full disk as a ValueError).
  """
  chain = _chain(exc)
  for e in chain:
    if isinstance(e, OSError) and e.errno:
      where = f": {e.filename}" if e.filename else ""
      return e.errno, (f"{os.strerror(e.errno)} "
                       f"({errno.errorcode.get(e.errno, e.errno)}{where})")
  for e in chain:
    for code in _OS_CAUSES:
      if os.strerror(code) in str(e):
        return code, f"{os.strerror(code)} ({errno.errorcode[code]})"
  return None, error_summary(exc)


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
  def _save(manager: ocp.CheckpointManager, step: int,
            args: ocp.args.Composite, metrics=None) -> None:
    """`manager.save` + wait; one CheckpointSaveError when it fails."""
    try:
      manager.save(step, args=args, metrics=metrics, force=True)
      manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      code, cause = os_error_cause(e)
      if jax.process_index() == 0:  # The partial temporary folder.
        for tmp in glob.glob(os.path.join(str(manager.directory),
                                          f"{step}.orbax-checkpoint-tmp*")):
          shutil.rmtree(tmp, ignore_errors=True)
      latest = manager.latest_step()
      kept = (f"the checkpoints saved before are intact (latest: step "
              f"{latest})" if latest is not None else
              "no checkpoint was saved before")
      raise CheckpointSaveError(
          f"Could not save the checkpoint of step {step} in "
          f"{os.path.join(str(manager.directory), str(step))}: {cause}; "
          f"{kept}.", code) from e

  @staticmethod
  def _args(state: Mapping[str, Any], config) -> ocp.args.Composite:
    return ocp.args.Composite(
        state=ocp.args.StandardSave(_to_numpy(dict(state))),
        config=ocp.args.JsonSave(json.loads(config_to_json(config))))

  def save(self, step: int, state: Mapping[str, Any], config) -> bool:
    """Saves `state` (a dict of host or device trees) at `step`.

    Returns:
      False when `step` was already saved.

    Raises:
      CheckpointSaveError: the save failed (e.g. a full disk); nothing of
        `step` is left behind and the earlier checkpoints are intact.
    """
    if step in self.latest.all_steps():
      return False
    self._save(self.latest, step, self._args(state, config))
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
    self._save(self.best, step, self._args(state, config),
               metrics={BEST_METRIC: float(value)})
    logging.info("New best %s %.4f at step %d.", BEST_METRIC, value, step)
    return True

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def restore(self, target: Mapping[str, Any], step: Optional[int] = None,
              best: bool = False) -> Dict[str, Any]:
    """Restores the state saved at `step` (default: latest, or the best).

    Without `step` (and `best`), a latest checkpoint that orbax cannot read
    (a truncated or deleted file) is skipped for the next older one: one
    warning names each unreadable step folder and its error, and those
    folders are moved to `<workdir>/checkpoints_corrupt/` (only once an older
    step has restored, so a `target` that fits no step moves nothing) so that
    training saves that step again.

    Args:
      target: a state dict with the structure, shapes and dtypes to restore
        (e.g. a freshly initialised state); its values are not used.
      step: which step; None = the latest intact one (or the best with
        `best`).
      best: read from checkpoints_best.

    Returns:
      The restored state dict of host numpy arrays.

    Raises:
      FileNotFoundError: no checkpoint.
      CheckpointError: no step could be restored (the message names each
        step folder tried and its error).
    """
    manager = self.best if best else self.latest
    if step is not None:
      steps = [step]
    elif best:
      steps = [s for s in [manager.best_step()] if s is not None]
    else:
      steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype),
        dict(target))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    failed: List[Tuple[int, Exception]] = []
    for s in steps:
      try:
        restored = manager.restore(s, args=args)
      except Exception as e:  # pylint: disable=broad-except
        failed.append((s, e))
        continue
      if failed:
        self._set_aside(manager, failed, s)
      return dict(restored["state"])
    raise CheckpointError(
        f"No checkpoint in {manager.directory} could be restored: " + "; ".join(
            f"{os.path.join(str(manager.directory), str(s))}: "
            f"{error_summary(e)}" for s, e in failed))

  @staticmethod
  def _set_aside(manager: ocp.CheckpointManager,
                 failed: Sequence[Tuple[int, Exception]], restored: int
                 ) -> None:
    """Moves unreadable step folders out of `manager` (process 0), warns."""
    aside = str(manager.directory) + "_corrupt"
    for s, e in failed:
      folder = os.path.join(str(manager.directory), str(s))
      dest = aside  # What the other processes say; process 0 moves it.
      if jax.process_index() == 0:
        dest, n = os.path.join(aside, str(s)), 1
        while os.path.exists(dest):
          dest, n = os.path.join(aside, f"{s}-{n}"), n + 1
        os.makedirs(aside, exist_ok=True)
        os.rename(folder, dest)
      logging.warning(
          "Checkpoint %s cannot be restored (%s); restored step %d, the "
          "newest intact one, instead, and moved the unreadable folder to %s.",
          folder, error_summary(e), restored, dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("ki2hoi_checkpoints_set_aside")
    manager.reload()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
