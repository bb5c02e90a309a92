"""Find and restore training checkpoints (model variables, not the optimizer).

The orbax layout is written by `checkpoints.manager.Checkpointer`:
`<workdir>/checkpoints/<step>/state`, `<workdir>/checkpoints_best/<step>/...`
and the config beside them. Evaluation, prediction and the notebooks read
checkpoints through `find_checkpoint` / `restore_checkpoint`.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import jax
import numpy as np

CHECKPOINT_CHOICES = ("auto", "best", "latest")
# Collections of the checkpointed state that the model reads.
_STATE_KEYS = ("step", "params", "batch_stats", "model_state")


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
