"""Run configs saved with checkpoints: rebuild them, compare a given one.

* `config_from_saved`: the config of a saved run (its JSON over `base`).
* `check_saved_config`: a ConfigError of one line when a given config
  contradicts a saved run: another network (any `model` field but the
  choices made at evaluation, `EVAL_CHOICES`) or another label space
  (`dataset.name`, `dataset.zero_shot_split`). Its checkpoints cannot be
  restored into that network, or would be scored on other classes.
* `check_config_matches`: every `model` and `dataset` difference, as a
  warning (prediction from a checkpoint folder).
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import ml_collections

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.config_lib import validation

# `model` fields that may differ from the saved run: how it is evaluated.
EVAL_CHOICES = ("model.verb_queries", "model.dtype", "model.frozen_dtype")
# Other fields a run's checkpoints depend on (with every other `model` field).
_LABEL_SPACE = ("dataset.name", "dataset.zero_shot_split")


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


# Fields added after runs were saved, with the value those runs used (not
# today's default): a run saved before `model.prompt_style` embedded bare-verb
# prompts.
_VALUES_BEFORE_FIELD = {("model", "prompt_style"): "bare"}


def _fill_fields_saved_before(config: ml_collections.ConfigDict,
                              saved: Mapping[str, Any]) -> None:
  for (group, field), value in _VALUES_BEFORE_FIELD.items():
    if group in config and field not in saved.get(group, {}):
      with config.ignore_type():
        config[group][field] = value


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run config from the JSON saved with a checkpoint (over `base`).

  A field the saved config predates takes the value that run used
  (`_VALUES_BEFORE_FIELD`), not today's default.
  """
  config = base.get_config()
  _merge(config, saved)
  _fill_fields_saved_before(config, saved)
  return config


def _flat(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = _as_tuples(v)
  return out


def _differences(config, saved: Mapping[str, Any]
                 ) -> List[Tuple[str, Any, Any]]:
  """(field, saved value, given value) of every differing field, sorted."""
  ours = _flat(config.to_dict())
  theirs = _flat(config_from_saved(saved).to_dict())
  return [(k, theirs[k], ours[k]) for k in sorted(theirs)
          if k in ours and ours[k] != theirs[k]]


def check_saved_config(config, saved: Mapping[str, Any], source: str) -> None:
  """Raises ConfigError when `config` contradicts the saved run.

  Args:
    config: the given run config.
    saved: the saved config as read from JSON (`source`).
    source: the file it was read from, for the message.

  Raises:
    ConfigError: one line naming each contradicting field, e.g.
      "model.d_model is 64 in <workdir>/config.json, 32 given (...)".
  """
  diffs = [(k, s, g) for k, s, g in _differences(config, saved)
           if (k.startswith("model.") and k not in EVAL_CHOICES)
           or k in _LABEL_SPACE]
  if not diffs:
    return
  (key, was, given), *others = diffs
  text = f"{key} is {was!r} in {source}, {given!r} given"
  text += "".join(f"; {k} is {s!r} there, {g!r} given" for k, s, g in others)
  raise validation.ConfigError(
      f"{text} (the checkpoints beside it hold that model: give the saved "
      "value, or another workdir for another model)")


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
