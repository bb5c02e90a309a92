"""Validation of experiment configs: wrong values fail early with the field name.

Unknown fields are already rejected by `config_flags` (`lock_config=True`); this
module checks the values of the fields that take a fixed set of choices or a
range, so a typo such as `--config.inference.score_fusion=summ` fails before
any data is read.
"""

from typing import Any, Iterable

import ml_collections

from ki2hoi_jax.data import metadata

_CHOICES = {
    "mode": ("train", "eval", "predict", "all"),
    "dataset.name": ("hico_det", "vcoco"),
    "dataset.zero_shot_split": ("",) + metadata.ZERO_SHOT_SPLITS,
    "dataset.on_bad_box": ("clip", "reject"),
    "dataset.on_bad_image": ("skip", "fail"),
    "dataset.synthetic_world": ("basic", "compositional"),
    "model.interaction_space": ("hoi", "verb"),
    "model.verb_queries": ("training_classes", "all_classes"),
    "model.prompt_style": metadata.PROMPT_STYLES,
    "model.backbone_depth": (18, 34, 50, 101),
    "model.encoder_norm": ("batch", "masked"),
    "model.backbone_norm": ("frozen", "group"),
    "model.dtype": ("float32", "bfloat16"),
    "model.frozen_dtype": ("float32", "bfloat16"),
    "loss.reconstruction": ("l1", "l2", "l1+l2", "none"),
    "loss.reconstruction_form": ("raw_all_layers", "unit_last_layer"),
    "loss.object_classes": ("all", "trained"),
    "model.encoder_type": ("ho_pair", "detr"),
    "model.classifier": ("clip_text", "linear"),
    "model.clip_cross_attention": (True, False),
    "model.verb_decoder": (True, False),
    "inference.score_fusion": ("sum", "genvlkt", "product"),
    "eval_protocol": ("python", "official"),
}

_POSITIVE = ("batch_size", "eval_batch_size", "model.d_model",
             "model.num_heads", "model.num_queries", "dataset.max_pairs",
             "dataset.max_size", "dataset.eval_short_side",
             "dataset.clip_image_size", "optimizer.grad_accum_steps",
             "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
             "dataset.size_buckets", "optimizer.learning_rate",
             "optimizer.num_epochs", "inference.top_k", "predict.top_k",
             "model.dim_feedforward", "model.instance_decoder_layers",
             "model.interaction_decoder_layers", "model.verb_decoder_layers",
             "dataset.synthetic_image_size")

# Legal types, wrong signs: a negative learning rate or loss weight trains to
# the end with nonsense, so they are rejected here.
_NON_NEGATIVE = ("optimizer.backbone_learning_rate", "optimizer.weight_decay",
                 "optimizer.pretrained_anchor",
                 "optimizer.clip_learning_rate",
                 "optimizer.grad_clip_norm", "optimizer.lr_drop_epoch",
                 "dataset.color_jitter",
                 "dataset.prefetch", "model.encoder_layers",
                 "model.backbone_frozen_stages", "model.logit_scale_init",
                 "loss.cost_interaction", "loss.cost_object_class",
                 "loss.cost_bbox", "loss.cost_giou",
                 "loss.interaction_loss_coef", "loss.object_class_loss_coef",
                 "loss.human_class_loss_coef", "loss.bbox_loss_coef",
                 "loss.giou_loss_coef", "loss.no_object_weight",
                 "loss.focal_gamma", "loss.reconstruction_loss_coef",
                 "inference.nms_alpha", "inference.nms_beta",
                 "eval_every_steps", "dataset.synthetic_num_train",
                 "dataset.synthetic_num_test", "init.synthetic_clip_steps",
                 "init.synthetic_clip_images", "init.synthetic_detector_steps",
                 "init.synthetic_detector_images")

# Probabilities and thresholds.
_UNIT_INTERVAL = ("model.dropout", "loss.focal_alpha",
                  "inference.nms_threshold", "inference.clip_pair_fusion",
                  "predict.score_threshold")


class ConfigError(ValueError):
  """A config field has a value the code cannot use."""


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  value = config
  for part in path.split("."):
    value = value[part]
  return value


def _check_in(config, path: str, choices: Iterable[Any]) -> None:
  value = _get(config, path)
  if value not in tuple(choices):
    raise ConfigError(f"config.{path}={value!r} is not one of {tuple(choices)}")


def check_unit_interval(name: str, value: Any) -> None:
  """Raises ConfigError unless 0 <= value <= 1 (`name` is the field or flag)."""
  if not 0.0 <= value <= 1.0:
    raise ConfigError(f"{name}={value!r} must be in [0, 1]")


def check_positive_int(name: str, value: Any) -> None:
  """Raises ConfigError unless value is an integer >= 1."""
  if isinstance(value, bool) or int(value) != value or value < 1:
    raise ConfigError(f"{name}={value!r} must be an integer >= 1")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first field with an unusable value."""
  for path, choices in _CHOICES.items():
    _check_in(config, path, choices)
  for path in _POSITIVE:
    if not _get(config, path) > 0:  # `not >` also rejects NaN.
      raise ConfigError(f"config.{path}={_get(config, path)!r} must be > 0")
  for path in _NON_NEGATIVE:
    if not _get(config, path) >= 0:
      raise ConfigError(f"config.{path}={_get(config, path)!r} must be >= 0")
  for path in _UNIT_INTERVAL:
    check_unit_interval(f"config.{path}", _get(config, path))
  roi = config.model.roi_size
  if roi is not None and roi <= 0:
    raise ConfigError(f"config.model.roi_size={roi!r} must be None or > 0")
  if config.model.d_model % config.model.num_heads:
    raise ConfigError(
        f"config.model.d_model={config.model.d_model} is not divisible by "
        f"config.model.num_heads={config.model.num_heads}")
  if not 0.0 < config.dataset.train_fraction <= 1.0:
    raise ConfigError("config.dataset.train_fraction="
                      f"{config.dataset.train_fraction!r} must be in (0, 1]")
  if config.dataset.name == "vcoco":
    if config.dataset.zero_shot_split:
      raise ConfigError("config.dataset.zero_shot_split must be '' for V-COCO")
    if config.dataset.synthetic_world != "basic":
      raise ConfigError("config.dataset.synthetic_world must be 'basic' for "
                        "V-COCO")
    if config.model.interaction_space != "verb":
      raise ConfigError("V-COCO needs config.model.interaction_space='verb'")
    if config.eval_protocol != "python":
      raise ConfigError("config.eval_protocol='official' is HICO-DET's "
                        "protocol; V-COCO has its own evaluator")
  if config.model.clip.image_size % config.model.clip.patch_size:
    raise ConfigError("config.model.clip.image_size must be a multiple of "
                      "config.model.clip.patch_size")
  if config.dataset.clip_image_size != config.model.clip.image_size:
    raise ConfigError(
        f"config.dataset.clip_image_size={config.dataset.clip_image_size} must "
        f"equal config.model.clip.image_size={config.model.clip.image_size}")
  if config.model.classifier == "linear" and (
      config.predict.verbs or config.predict.objects
      or config.predict.prompts_file):
    raise ConfigError("config.model.classifier='linear' scores only its "
                      "training classes; open-vocabulary prediction "
                      "(config.predict.verbs/objects/prompts_file) needs "
                      "config.model.classifier='clip_text'")
  if config.batch_size % config.optimizer.grad_accum_steps:
    raise ConfigError("config.batch_size must be divisible by "
                      "config.optimizer.grad_accum_steps")
  if (config.optimizer.pretrained_anchor > 0 and not config.init.detr_checkpoint
      and config.init.synthetic_detector_steps <= 0):
    raise ConfigError("config.optimizer.pretrained_anchor > 0 holds the "
                      "detector near its checkpoint: set "
                      "config.init.detr_checkpoint or "
                      "config.init.synthetic_detector_steps")
  check_pretrained_weights(config)
  return config


def check_pretrained_weights(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError if a real-dataset run would start from random weights.

  With `dataset.root` set (a real dataset; '' is the synthetic one) both
  `init.clip_checkpoint` and `init.detr_checkpoint` are needed, unless
  `init.allow_random`. A synthetic-knowledge CLIP (`init.synthetic_clip_steps
  > 0`, made before training) counts as a CLIP checkpoint, the synthetic
  detector (`init.synthetic_detector_steps > 0`) as a DETR one.
  """
  init = config.init
  if not config.dataset.root or init.allow_random:
    return
  empty = [name for name in ("clip_checkpoint", "detr_checkpoint")
           if not init[name]]
  if "clip_checkpoint" in empty and init.synthetic_clip_steps > 0:
    empty.remove("clip_checkpoint")
  if "detr_checkpoint" in empty and init.synthetic_detector_steps > 0:
    empty.remove("detr_checkpoint")
  if empty:
    raise ConfigError(
        f"config.init.{' and config.init.'.join(empty)} "
        f"{'is' if len(empty) == 1 else 'are'} empty: a run on "
        f"config.dataset.root={config.dataset.root!r} would start from "
        "random weights. Convert the public CLIP ViT-B/32 and DETR-R50 "
        "checkpoints (README.md, section 'Pretrained weights') and pass "
        "--config.init.clip_checkpoint=<clip .msgpack> "
        "--config.init.detr_checkpoint=<detr .msgpack>, or "
        "--config.init.allow_random=True to train from random weights on "
        "purpose.")
