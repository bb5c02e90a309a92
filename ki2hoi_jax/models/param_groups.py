"""KI2HOI's parameters by optimizer group, and their counts.

The optimizer tells the parameters of `KI2HOI` apart by name (`param_labels`):
the frozen CLIP image tower and ResNet stages, the other ResNet stages
(backbone learning rate), the weights initialised from CLIP text embeddings
(CLIP learning rate) and the rest. `param_breakdown` counts them.
"""

from typing import Dict

import flax
import jax
import numpy as np

LABEL_FROZEN = "frozen"
LABEL_BACKBONE = "backbone"
LABEL_DEFAULT = "default"
LABEL_CLIP = "clip"

# Parameters initialised from CLIP text embeddings (GEN-VLKT trains its
# `obj_visual_projection` / `visual_projection` at `lr_clip`): the object
# classifier's projection, kernel [E, K + 1] (K object-prompt columns plus a
# random no-object column, see `ObjectClassifier`) and bias. The interaction
# classifier has no such parameters: its text embeddings are constants.
TEXT_INITIALISED = (("instance_interactor", "obj_classifier",
                     "obj_visual_projection"),)


def _label(path, backbone_frozen_stages: int) -> str:
  keys = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
  if keys and keys[0] == "params":  # Accept a full variables dict too.
    keys = keys[1:]
  if not keys:
    return LABEL_DEFAULT
  if keys[0] == "clip_visual":
    return LABEL_FROZEN
  if keys[0] == "backbone":
    sub = keys[1] if len(keys) > 1 else ""
    if backbone_frozen_stages > 0 and sub in ("conv1", "bn1"):
      return LABEL_FROZEN
    if sub.startswith("layer"):
      stage = int(sub[len("layer"):].split("_")[0])
      if stage <= backbone_frozen_stages:
        return LABEL_FROZEN
    return LABEL_BACKBONE
  if any(tuple(keys[:len(t)]) == t for t in TEXT_INITIALISED):
    return LABEL_CLIP
  return LABEL_DEFAULT


def param_labels(params, backbone_frozen_stages: int = 1):
  """Optimizer labels: 'frozen' | 'backbone' | 'clip' | 'default' per parameter.

  'frozen': the CLIP image tower, and the ResNet stem + stages
  1..backbone_frozen_stages (DETR freezes the stem and layer1); 'backbone':
  the other ResNet stages (backbone learning rate); 'clip': the weights
  initialised from CLIP text embeddings (`TEXT_INITIALISED`, CLIP learning
  rate); 'default': the rest.
  Use with `optax.multi_transform({..., 'frozen': optax.set_to_zero()},
  param_labels(params))`.

  Args:
    params: the `params` collection (or a variables dict holding it).
    backbone_frozen_stages: `config.model.backbone_frozen_stages`.

  Returns:
    A pytree of strings with the structure of `params`.
  """
  return jax.tree_util.tree_map_with_path(
      lambda p, _: _label(p, backbone_frozen_stages), params)


def trainable_mask(params, backbone_frozen_stages: int = 1):
  """Pytree of bools: True where the optimizer updates the parameter."""
  return jax.tree_util.tree_map(
      lambda l: l != LABEL_FROZEN,
      param_labels(params, backbone_frozen_stages))


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape, dtype=np.int64)
                 for x in jax.tree_util.tree_leaves(tree)))


def param_breakdown(params, backbone_frozen_stages: int = 1
                    ) -> Dict[str, int]:
  """Parameter counts: clip / backbone / rest / total, and by optimizer label.

  Args:
    params: the `params` collection.
    backbone_frozen_stages: as in `param_labels`.

  Returns:
    {'clip', 'backbone', 'rest', 'total', 'frozen', 'trainable'} counts
    (frozen-BN constants are not params and are not counted).
  """
  params = flax.core.unfreeze(params)
  clip = count_params(params.get("clip_visual", {}))
  bb = count_params(params.get("backbone", {}))
  total = count_params(params)
  labels = jax.tree_util.tree_leaves(param_labels(params,
                                                  backbone_frozen_stages))
  sizes = [int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)]
  frozen = sum(s for s, l in zip(sizes, labels) if l == LABEL_FROZEN)
  return dict(clip=clip, backbone=bb, rest=total - clip - bb, total=total,
              frozen=frozen, trainable=total - frozen)
