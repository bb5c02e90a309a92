"""What a training or evaluation run is built from, before its first step.

* `prepare_data`: the dataset builder (process 0 first, the others after a
  barrier) and `micro_batch_size`, the global images of one train step.
* `build_setup`: the text embeddings, once, with the CLIP text tower
  (converted checkpoint, or the random tower of
  `clip_text.clip_text_params`, the one `predict` uses): the training
  interaction classifier holds the seen classes only
  (`vocabulary.interaction_class_indices`), evaluation all classes (with
  `model.classifier='linear'` the training classes only:
  `vocabulary.evaluation_vocabulary`). Then the model (`build_model(config,
  axis_name='batch')`), its `init` with the object prompt embeddings
  (`startup.init_variables`), pretrained CLIP/DETR weights
  (`weights.pretrained.init_from_pretrained`), the optimizer and the step-0
  TrainState.
* `restore`: a checkpoint into that `Setup` (state and dropout key).
* `params_checksum`: one hash of a parameter tree (runs that must end with
  the same parameters compare it).
"""

import dataclasses
import hashlib
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.clip import text_embeddings as clip_text
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vocabulary as vocabulary_lib
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.models import param_groups
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import startup
from ki2hoi_jax.train import train_step as ts
from ki2hoi_jax.weights import pretrained


def barrier(name: str) -> None:
  """Waits for every process (nothing with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def prepare_data(config, workdir: str):
  """The dataset builder; process 0 builds it while the others wait."""
  builder = None
  if jax.process_index() == 0:
    builder = input_pipeline.prepare_dataset(config, workdir)
  barrier("ki2hoi_prepare_dataset")
  if builder is None:
    builder = input_pipeline.prepare_dataset(config, workdir)
  return builder


def micro_batch_size(config) -> int:
  """Global images per train step (batch_size / grad_accum_steps)."""
  return int(config.batch_size) // int(config.optimizer.grad_accum_steps)


def interaction_prompts(config) -> List[str]:
  """Prompts of all interaction classes (the evaluation classifier).

  In `config.model.prompt_style` (`vocabulary.closed_vocabulary`).
  """
  return list(vocabulary_lib.closed_vocabulary(config).prompts)


def eval_candidate_table(config) -> Optional[postprocess.CandidateTable]:
  """Candidates the eval step scores (None on V-COCO: host-side)."""
  if config.dataset.name == "vcoco":
    return None
  return vocabulary_lib.evaluation_vocabulary(config).table


def object_prompts(config) -> List[str]:
  """'a photo of a/an [object]' for the K object classes."""
  return [metadata.object_prompt(o)
          for o in vocabulary_lib.training_objects(config.dataset.name)]


@dataclasses.dataclass
class Setup:
  """Everything the loop and the eval hook need besides the data.

  Attributes:
    model: the KI2HOI module (synced BN over 'batch').
    state: host TrainState (step 0, or restored).
    rng: base PRNG key of dropout.
    labels: flat parameter labels.
    tx: optimizer of the trainable subtree.
    train_classes: [C_train] label columns of the training classifier.
    trained_objects: [K] bool, the objects the object cross-entropy scores
      with `loss.object_classes='trained'` (those of the training split's
      seen HOIs), or None: all of them.
    eval_text: [C_eval, E] text embeddings of the evaluated interaction
      classes (all; the training classes with `model.classifier='linear'`).
    verb_query_text: [C_q, E] text embeddings of the verb decoder's class
      queries at evaluation (`vocabulary.verb_query_prompts`).
    eval_clip_fusion: the inputs of `clip_fusion.fuse_clip_crop_scores` at
      evaluation (`vocabulary.clip_fusion_inputs`; {}: off).
    schedules: learning-rate schedules by parameter group.
    steps_per_epoch: train steps per epoch.
    total_steps: train steps of the run.
  """
  model: Any
  state: ts.TrainState
  rng: jnp.ndarray
  labels: Dict[str, str]
  tx: Any
  train_classes: np.ndarray
  trained_objects: Optional[np.ndarray]
  eval_text: np.ndarray
  verb_query_text: np.ndarray
  eval_clip_fusion: Dict[str, np.ndarray]
  schedules: Dict[str, Any]
  steps_per_epoch: int
  total_steps: int


def build_setup(config, steps_per_epoch: int) -> Setup:
  """Text embeddings, model variables, optimizer and the step-0 state."""
  clip_params = clip_text.clip_text_params(config)
  prompts = interaction_prompts(config)
  eval_text = np.asarray(clip_text.class_embeddings(clip_params, config,
                                                    prompts))
  obj_text = clip_text.class_embeddings(clip_params, config,
                                        object_prompts(config))
  train_classes = vocabulary_lib.interaction_class_indices(config, "train")
  train_text = eval_text[train_classes]
  def embed(texts):
    return clip_text.class_embeddings(clip_params, config, texts)
  verb_query_text = vocabulary_lib.verb_query_embeddings(
      config, prompts, eval_text, embed)
  eval_clip_fusion = vocabulary_lib.clip_fusion_inputs(
      config, vocabulary_lib.evaluation_vocabulary(config), embed)
  if eval_clip_fusion:
    logging.info(
        "CLIP crop fusion at evaluation (w = %g): %s untrained interaction "
        "columns, %s untrained objects, %s untrained (verb, object) "
        "candidates.", config.inference.clip_pair_fusion,
        *(int((~np.asarray(eval_clip_fusion[k])).sum())
          if k in eval_clip_fusion else 0
          for k in ("trained_classes", "trained_objects",
                    "trained_candidates")))
  if config.model.classifier == "linear":  # Its head scores these only.
    eval_text = train_text
  logging.info("Interaction classifier: %d training classes, %d at "
               "evaluation (verb decoder queries at evaluation: %d, %s).",
               len(train_classes), len(eval_text), len(verb_query_text),
               config.model.verb_queries)

  model = ki2hoi.build_model(config, axis_name=ts.AXIS_NAME)
  rng = jax.random.PRNGKey(int(config.seed))
  init_rng, rng = jax.random.split(rng)
  image, mask, clip_image, _ = ki2hoi.dummy_inputs(config)
  variables = startup.init_variables(
      model, init_rng, image, mask, clip_image, jnp.asarray(train_text),
      jnp.asarray(obj_text), train=False)
  variables = pretrained.init_from_pretrained(variables, config)
  variables = ki2hoi.with_text_embeddings(variables, train_text)
  labels = optimizer.flat_labels(param_groups.param_labels(
      variables["params"], int(config.model.backbone_frozen_stages)))
  tx = optimizer.make_optimizer(config, labels, steps_per_epoch)
  state = ts.create_train_state(variables, tx, labels)
  state = jax.device_get(state)
  counts = param_groups.param_breakdown(variables["params"],
                                  int(config.model.backbone_frozen_stages))
  logging.info("Parameters: %s", counts)
  trained_objects = None
  if config.loss.object_classes == "trained":
    trained_objects = vocabulary_lib.trained_object_mask(
        config, vocabulary_lib.closed_vocabulary(config).objects)
    if trained_objects is not None:
      logging.info("Object cross-entropy over %d of %d objects "
                   "(loss.object_classes='trained').",
                   int(trained_objects.sum()), len(trained_objects))
  return Setup(model=model, state=state, rng=rng, labels=labels, tx=tx,
               train_classes=train_classes, trained_objects=trained_objects,
               eval_text=eval_text,
               verb_query_text=verb_query_text,
               eval_clip_fusion=eval_clip_fusion,
               schedules=optimizer.learning_rate_schedules(config,
                                                           steps_per_epoch),
               steps_per_epoch=steps_per_epoch,
               total_steps=optimizer.num_train_steps(steps_per_epoch, config))


def checkpoint_tree(state: ts.TrainState, rng) -> Dict[str, Any]:
  """What a checkpoint holds: the state's items and the dropout key."""
  items = ts.checkpoint_items(state)
  items["rng"] = np.asarray(rng)
  return items


def restore(setup: Setup, checkpointer: checkpoint_manager.Checkpointer,
            best: bool = False, step: Optional[int] = None) -> int:
  """Restores `setup.state` and `setup.rng` in place; returns the step."""
  target = checkpoint_tree(setup.state, setup.rng)
  items = checkpointer.restore(target, step=step, best=best)
  setup.state = ts.restore_items(setup.state, items)
  setup.rng = jnp.asarray(items["rng"])
  return int(items["step"])


def params_checksum(params: Mapping[str, Any]) -> str:
  """sha256 of every parameter's bytes in name order (host arrays)."""
  h = hashlib.sha256()
  flat = traverse_util.flatten_dict(params, sep="/")
  for name, value in sorted(flat.items()):
    h.update(name.encode())
    h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
  return h.hexdigest()
