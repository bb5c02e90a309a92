r"""Converted pretrained checkpoints: save, load, and strict loading into params.

A converted checkpoint is two files:

* `<path>`: the parameter tree (nested dict of float32 arrays) serialised with
  `flax.serialization.msgpack_serialize`;
* `<path>.json`: metadata, e.g. `{"format": "ki2hoi_jax/clip", "clip": {...the
  inferred config.model.clip fields...}, "source": "...", "covers": [...]}`.

`covers` lists the subtrees (paths relative to the checkpoint root, '' = all)
that the checkpoint defines completely. `load_pretrained` places a checkpoint
subtree at `prefix` in a model's params and fails, unless `allow_partial`, when

* a checkpoint tensor has no target parameter (unexpected),
* shapes differ (mismatched),
* a target parameter under a covered subtree has no tensor (missing).

The checks compare flattened '/'-joined names, the `inspect_params` idea of
google-research/vision_transformer (`vit_jax/checkpoint.py`).

  params = load_pretrained(params, config.init.clip_checkpoint,
                           prefix="clip_visual", source_prefix="visual")
"""

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
from flax import serialization
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

SEP = "/"


class CheckpointMismatchError(ValueError):
  """A checkpoint does not match the parameter tree it is loaded into."""


def flatten(tree: Mapping[str, Any]) -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x} (empty tree -> {})."""
  return {SEP.join(k): v for k, v in
          traverse_util.flatten_dict(_to_dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  return traverse_util.unflatten_dict({tuple(k.split(SEP)): v
                                       for k, v in flat.items()})


def _to_dict(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_dict(v) for k, v in tree.items()}
  return tree


def metadata_path(path: str) -> str:
  return path + ".json"


def save_checkpoint(path: str, params: Mapping[str, Any],
                    meta: Optional[Mapping[str, Any]] = None) -> None:
  """Writes `params` (msgpack, float arrays as numpy) and `meta` (JSON)."""
  tree = unflatten({k: np.asarray(v) for k, v in flatten(params).items()})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(serialization.msgpack_serialize(tree))
  with open(metadata_path(path), "w") as f:
    json.dump(dict(meta or {}), f, indent=2, sort_keys=True)


def load_checkpoint(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads a converted checkpoint: (nested params of numpy arrays, meta)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Converted checkpoint {path!r} not found (see "
        "README 'Pretrained weights' for the conversion commands).")
  with open(path, "rb") as f:
    tree = serialization.msgpack_restore(f.read())
  meta = {}
  if os.path.exists(metadata_path(path)):
    with open(metadata_path(path)) as f:
      meta = json.load(f)
  return _to_dict(tree), meta


@dataclasses.dataclass
class LoadReport:
  """Result of matching checkpoint names against a parameter tree.

  Attributes:
    loaded: target names (relative to the prefix) that received a tensor.
    missing: target names under a covered subtree without a tensor.
    unexpected: checkpoint names without a target parameter.
    mismatched: (name, checkpoint shape, target shape) for shape conflicts.
    not_covered: target names outside the covered subtrees (left as they are).
  """
  loaded: List[str]
  missing: List[str]
  unexpected: List[str]
  mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]
  not_covered: List[str]

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mismatched)

  def summary(self, limit: int = 20) -> str:
    """Human-readable list of the problems (at most `limit` per kind)."""
    lines = [f"loaded {len(self.loaded)} tensors"]
    for title, items in (("missing", self.missing),
                         ("unexpected", self.unexpected),
                         ("shape mismatch (checkpoint vs model)",
                          [f"{n}: {a} vs {b}" for n, a, b in self.mismatched])):
      if items:
        lines.append(f"{len(items)} {title}:")
        lines += [f"  {x}" for x in items[:limit]]
        if len(items) > limit:
          lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def _under(name: str, prefixes: Sequence[str]) -> bool:
  return any(p == "" or name == p or name.startswith(p + SEP)
             for p in prefixes)


def compare(target: Mapping[str, Any], source: Mapping[str, Any],
            covers: Sequence[str] = ("",)) -> LoadReport:
  """Matches flat name->array dicts by name and shape.

  Args:
    target: flat {name: array or ShapeDtypeStruct} of the model subtree.
    source: flat {name: array} of the checkpoint subtree.
    covers: subtrees of `source` defined completely ('' = everything).

  Returns:
    The LoadReport.
  """
  loaded, mismatched, unexpected = [], [], []
  for name, value in sorted(source.items()):
    if name not in target:
      unexpected.append(name)
    elif tuple(np.shape(value)) != tuple(target[name].shape):
      mismatched.append((name, tuple(np.shape(value)),
                         tuple(target[name].shape)))
    else:
      loaded.append(name)
  rest = sorted(set(target) - set(source))
  missing = [n for n in rest if _under(n, covers)]
  not_covered = [n for n in rest if not _under(n, covers)]
  return LoadReport(loaded, missing, unexpected, mismatched, not_covered)


def _subtree(tree: Mapping[str, Any], prefix: str) -> Any:
  node = tree
  for part in [p for p in prefix.split(SEP) if p]:
    if not isinstance(node, Mapping) or part not in node:
      raise KeyError(f"{prefix!r} not found (no {part!r}; available: "
                     f"{sorted(node) if isinstance(node, Mapping) else node})")
    node = node[part]
  return node


def _relative_covers(covers: Sequence[str], source_prefix: str) -> List[str]:
  """Re-expresses checkpoint-root `covers` relative to `source_prefix`."""
  if not source_prefix:
    return list(covers)
  out = []
  for c in covers:
    if c == "" or source_prefix == c or source_prefix.startswith(c + SEP):
      out.append("")
    elif c.startswith(source_prefix + SEP):
      out.append(c[len(source_prefix) + 1:])
  return out


def load_pretrained_with_report(
    params: Mapping[str, Any], path: str, prefix: str = "",
    allow_partial: bool = False, source_prefix: str = ""
) -> Tuple[Dict[str, Any], LoadReport]:
  """Like `load_pretrained`, also returning the LoadReport."""
  ckpt, meta = load_checkpoint(path)
  source = flatten(_subtree(ckpt, source_prefix))
  target_tree = _subtree(params, prefix)
  target = flatten(target_tree)
  covers = _relative_covers(meta.get("covers", [""]), source_prefix)
  report = compare(target, source, covers)
  where = f"{path!r}[{source_prefix or '/'}] -> params[{prefix or '/'}]"
  if not report.ok:
    message = f"Checkpoint {where} does not match:\n{report.summary()}"
    if not allow_partial:
      raise CheckpointMismatchError(
          message + "\n(set config.init.allow_partial=True to load the "
          "matching tensors anyway)")
    logging.warning("%s\nLoading the %d matching tensors.", message,
                    len(report.loaded))
  else:
    logging.info("Loaded %s: %d tensors.", where, len(report.loaded))
  new_flat = dict(flatten(params))
  base = prefix.strip(SEP)
  for name in report.loaded:
    full = f"{base}{SEP}{name}" if base else name
    dtype = getattr(new_flat[full], "dtype", jnp.float32)
    new_flat[full] = jnp.asarray(source[name], dtype=dtype)
  return unflatten(new_flat), report


def load_pretrained(params: Mapping[str, Any], path: str, prefix: str = "",
                    allow_partial: bool = False,
                    source_prefix: str = "") -> Dict[str, Any]:
  """Returns `params` with the subtree at `prefix` taken from a checkpoint.

  Args:
    params: the model's parameter tree (e.g. `variables['params']`).
    path: converted checkpoint (msgpack + `.json` metadata).
    prefix: '/'-joined path in `params` where the checkpoint subtree goes
      ('' = root), e.g. 'clip_visual'.
    allow_partial: load the tensors that match and only log the missing,
      unexpected and mismatched names instead of raising.
    source_prefix: '/'-joined subtree of the checkpoint to take ('' = all),
      e.g. 'visual' for the image tower of a CLIP checkpoint.

  Returns:
    A new nested dict; untouched leaves are the original arrays.

  Raises:
    CheckpointMismatchError: names or shapes differ and not allow_partial.
  """
  return load_pretrained_with_report(params, path, prefix, allow_partial,
                                     source_prefix)[0]


def check_clip_config(meta: Mapping[str, Any], clip_cfg,
                      path: str = "") -> None:
  """Raises if a converted CLIP checkpoint's architecture differs from cfg."""
  from ki2hoi_jax.clip import model as clip_model  # pylint: disable=g-import-not-at-top
  saved = meta.get("clip")
  if not saved:
    return
  wanted = clip_model.clip_kwargs(clip_cfg)
  diff = {k: (saved.get(k), v) for k, v in wanted.items()
          if saved.get(k) != v}
  if diff:
    overrides = " ".join(f"--config.model.clip.{k}={saved[k]}"
                         for k in sorted(diff) if k in saved)
    raise CheckpointMismatchError(
        f"CLIP checkpoint {path!r} has a different architecture than "
        f"config.model.clip (field: checkpoint vs config): {diff}. "
        f"Use: {overrides}")


def load_clip_params(path: str, clip_cfg=None) -> Dict[str, Any]:
  """The full CLIP params of a converted checkpoint (checked against cfg)."""
  params, meta = load_checkpoint(path)
  if clip_cfg is not None:
    check_clip_config(meta, clip_cfg, path)
  return params


def init_from_pretrained(variables: Mapping[str, Any],
                         config) -> Dict[str, Any]:
  """Loads `config.init.clip_checkpoint` / `detr_checkpoint` into variables.

  Args:
    variables: KI2HOI variables from `model.init` ({'params', 'frozen_bn',
      ...}).
    config: the experiment config (reads `init.*` and `model.clip`).

  Returns:
    variables with `params/clip_visual` from the CLIP checkpoint's `visual`
    tower and the DETR-initialised backbone, input projection and decoder
    tensors; unchanged where a path is ''.
  """
  variables = _to_dict(variables)
  allow = bool(config.init.allow_partial)
  if config.init.clip_checkpoint:
    path = config.init.clip_checkpoint
    check_clip_config(load_checkpoint_meta(path), config.model.clip, path)
    variables = load_pretrained(variables, path, prefix="params/clip_visual",
                                allow_partial=allow, source_prefix="visual")
  if config.init.detr_checkpoint:
    # Converted DETR-R50: frozen batch norm; a synthetic detector
    # (train/pretrain_detector.py) records the norm it was trained with.
    norm = load_checkpoint_meta(config.init.detr_checkpoint).get(
        "backbone_norm", "frozen")
    if config.model.backbone_norm != norm:
      raise ValueError(f"config.init.detr_checkpoint needs "
                       f"config.model.backbone_norm={norm!r} (the "
                       f"checkpoint's backbone norm), got "
                       f"{config.model.backbone_norm!r}.")
    variables = load_pretrained(variables, config.init.detr_checkpoint,
                                prefix="", allow_partial=allow)
  return variables


def load_checkpoint_meta(path: str) -> Dict[str, Any]:
  """Only the `.json` metadata of a converted checkpoint ({} if absent)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Converted checkpoint {path!r} not found (see "
        "README 'Pretrained weights' for the conversion commands).")
  if not os.path.exists(metadata_path(path)):
    return {}
  with open(metadata_path(path)) as f:
    return json.load(f)


def stale_settings(figure_path: str, wanted: Mapping[str, Any],
                   what: str) -> List[str]:
  """Why a file pretrained into a workdir does not serve a run ([]: it does).

  Args:
    figure_path: the JSON its pretraining writes last, with the settings it
      was made with (absent after a killed run).
    wanted: the settings the run needs.
    what: its name in the warning ('synthetic CLIP /w/clip/...').

  Returns:
    One entry per differing setting ('missing' when there is no figure).
  """
  try:
    with open(figure_path) as f:
      made = json.load(f)
  except (OSError, ValueError):
    return ["missing"]
  stale = [f"{k} {made.get(k)!r} (wanted {v!r})"
           for k, v in wanted.items() if made.get(k) != v]
  if stale:
    logging.warning("Remaking the %s: %s.", what, ", ".join(stale))
  return stale


def make_once(figure_path: str, wanted: Mapping[str, Any], what: str,
              make: Callable[[], None]) -> None:
  """Calls `make` on process 0 when `stale_settings`; the others wait."""
  if jax.process_index() == 0 and stale_settings(figure_path, wanted, what):
    make()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    # A name the same on every host (the workdir path may be spelt apart).
    multihost_utils.sync_global_devices(
        "pretrained " + os.path.basename(figure_path))
