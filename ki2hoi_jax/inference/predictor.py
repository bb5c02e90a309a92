"""A restored KI2HOI bound to a class list: jitted forward pass -> triplets.

The model runs jitted on a batch of one (one compilation per padded shape,
model and class list), followed in the same program by CLIP's crop scores
where `inference.clip_pair_fusion` > 0 (evaluation/clip_fusion.py), then
post-processing as evaluation (`config.inference`: score fusion, top-k
candidates, per-class triplet NMS), then the confidence threshold and top-k
of prediction. The fused score ranks (`rank_score`); the confidence `score`
(`S_h * S_o * S_verb`, `postprocess.select_top_k(..., with_confidence=True)`)
is shown and thresholded. Triplet dicts are described in
`inference/predict.py`.
"""

import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from ki2hoi_jax.checkpoints import restore
from ki2hoi_jax.clip import text_embeddings as clip_text
from ki2hoi_jax.evaluation import clip_fusion
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vocabulary as vocabulary_lib
from ki2hoi_jax.inference import images
from ki2hoi_jax.inference import open_vocabulary
from ki2hoi_jax.models import ki2hoi


def decode_triplets(selected: Mapping[str, np.ndarray],
                    sub_boxes: np.ndarray, obj_boxes: np.ndarray,
                    orig_size: Sequence[int],
                    vocabulary: vocabulary_lib.Vocabulary, *,
                    score_threshold: float, top_k: int,
                    nms: bool = True, nms_threshold: float = 0.7,
                    nms_alpha: float = 1.0, nms_beta: float = 0.5
                    ) -> List[Dict[str, Any]]:
  """Top-k candidates of one image -> triplet dicts (module docstring).

  Args:
    selected: `postprocess.select_top_k(..., with_confidence=True)` output
      of one image ([k] `scores`, `queries`, `candidates`, `confidences`).
    sub_boxes: [Q, 4] human boxes (normalised cxcywh).
    obj_boxes: [Q, 4] object boxes.
    orig_size: (h, w) of the image.
    vocabulary: the scored classes (`table` gives verb/object of a
      candidate).
    score_threshold: minimum confidence (`confidences`, the triplet's
      `score`); the fused `scores` only rank.
    top_k: maximum number of triplets.
    nms: per-class triplet NMS (class = candidate row of the table), on the
      fused scores.
    nms_threshold: NMS threshold.
    nms_alpha: NMS human-IoU exponent.
    nms_beta: NMS object-IoU exponent.

  Returns:
    Triplet dicts in descending `rank_score` (the fused score); `score` is
    the confidence, `pair` the query index (same pair, same boxes).
  """
  h, w = (float(v) for v in orig_size)
  size = np.asarray([[h, w]])
  scores = np.asarray(selected["scores"], np.float64)
  confidences = np.asarray(selected["confidences"], np.float64)
  q = np.asarray(selected["queries"])
  c = np.asarray(selected["candidates"])
  sub = postprocess.to_original_xyxy(np.asarray(sub_boxes)[None], size)[0][q]
  obj = postprocess.to_original_xyxy(np.asarray(obj_boxes)[None], size)[0][q]
  if nms:
    keep = postprocess.triplet_nms(sub, obj, scores, c, nms_threshold,
                                   nms_alpha, nms_beta)
  else:
    keep = np.argsort(-scores, kind="stable")
  keep = [i for i in keep
          if confidences[i] >= score_threshold][:max(0, top_k)]
  limit = np.asarray([w, h, w, h])
  table = vocabulary.table
  out = []
  for i in keep:
    out.append({
        "human_box": np.clip(sub[i], 0, limit).tolist(),
        "object_box": np.clip(obj[i], 0, limit).tolist(),
        "object": vocabulary.objects[int(table.object_index[c[i]])],
        "verb": vocabulary.verbs[int(table.verb_index[c[i]])],
        "score": float(confidences[i]),
        "rank_score": float(scores[i]),
        "pair": int(q[i]),
    })
  return out


@functools.partial(jax.jit, static_argnames=(
    "model", "table", "score_fusion", "top_k", "fusion_weight"))
def _forward(variables, image, mask, clip_image, text, query_text,
             fusion_inputs, *, model, table: postprocess.CandidateTable,
             score_fusion: str, top_k: int, fusion_weight: float):
  """Model, CLIP crop fusion and top-k candidates of a batch.

  Args:
    variables: the model variables.
    image, mask, clip_image: a preprocessed batch (`images.preprocess`).
    text: [C, E] interaction text embeddings.
    query_text: [C_q, E] text embeddings of the verb decoder's queries.
    fusion_inputs: `vocabulary.clip_fusion_inputs` ({}: no crop fusion).
    model: the KI2HOI module (static, as the rest).
    table: the candidates post-processing scores.
    score_fusion: `inference.score_fusion`.
    top_k: `inference.top_k`.
    fusion_weight: `inference.clip_pair_fusion`.

  Returns:
    The `postprocess.select_top_k` candidates (with `confidences`) and the
    `pred_*` outputs.
  """
  outputs = model.apply(variables, image, mask, clip_image, text,
                        verb_query_text_embeddings=query_text, train=False)
  outputs = clip_fusion.fuse_clip_crop_scores(
      outputs, image, mask, text, fusion_inputs, variables["params"],
      model=model, weight=fusion_weight, crop_size=clip_image.shape[1])
  out = postprocess.select_top_k(outputs, table, score_fusion, top_k,
                                 with_confidence=True)
  out.update({k: outputs[k] for k in outputs if k.startswith("pred_")})
  return out


class Predictor:
  """A restored model bound to a class list; `predict(pixels)` -> triplets.

  Attributes:
    config: the run config.
    vocabulary: the scored classes.
    score_threshold: minimum confidence (`score`) of a reported triplet.
    top_k: maximum triplets per image.
  """

  def __init__(self, config, variables: Mapping[str, Any],
               vocabulary: vocabulary_lib.Vocabulary,
               clip_params: Mapping[str, Any], *,
               score_threshold: float = 0.3, top_k: int = 10):
    """Prepares text embeddings, params and the jitted forward pass.

    Args:
      config: the run config (model, dataset, inference).
      variables: restored model variables (`Restored.variables`).
      vocabulary: the classes to score.
      clip_params: CLIP text-tower params the model was trained with.
      score_threshold: see the class docstring.
      top_k: see the class docstring.
    """
    self.config = config
    self.vocabulary = vocabulary
    self.score_threshold = float(score_threshold)
    self.top_k = int(top_k)
    fusion = config.inference.score_fusion
    if fusion not in postprocess.SCORE_FUSIONS:
      raise ValueError(f"inference.score_fusion must be one of "
                       f"{postprocess.SCORE_FUSIONS}, got {fusion!r}")
    prepared = open_vocabulary.prepare_classes(
        vocabulary, variables["params"], clip_params, config)
    self._text = jax.device_put(prepared.interaction_embeddings)
    self._query_text = jax.device_put(prepared.verb_query_embeddings)
    self._clip_fusion = jax.device_put(vocabulary_lib.clip_fusion_inputs(
        config, vocabulary,
        lambda texts: clip_text.class_embeddings(clip_params, config,
                                                 texts)))
    self._variables = jax.device_put(
        dict(variables, params=prepared.params))
    self._forward = functools.partial(
        _forward, model=ki2hoi.build_model(
            config, num_object_classes=prepared.num_object_classes),
        table=vocabulary.table, score_fusion=fusion,
        top_k=int(config.inference.top_k),
        fusion_weight=float(config.inference.clip_pair_fusion))
    self._shapes = set()

  @property
  def compiled_shapes(self) -> List[Tuple[int, int]]:
    """Padded (H, W) shapes seen so far (one compilation each)."""
    return sorted(self._shapes)

  def outputs(self, batch: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Host arrays of a preprocessed batch of one (`images.preprocess`).

    Returns:
      The final-layer model outputs (`pred_*`, docs/contracts.md) and the
      `postprocess.select_top_k` candidates (`scores`, `queries`,
      `candidates`, `confidences`, [1, k]).
    """
    self._shapes.add(tuple(batch["image"].shape[1:3]))
    return jax.device_get(self._forward(
        self._variables, batch["image"], batch["mask"], batch["clip_image"],
        self._text, self._query_text, self._clip_fusion))

  def predict_batch(self, batch: Mapping[str, np.ndarray]
                    ) -> List[Dict[str, Any]]:
    """Triplets of a preprocessed batch of one (`images.preprocess`)."""
    out = self.outputs(batch)
    inf = self.config.inference
    return decode_triplets(
        {k: out[k][0]
         for k in ("scores", "queries", "candidates", "confidences")},
        out["pred_sub_boxes"][0], out["pred_obj_boxes"][0],
        batch["orig_size"][0], self.vocabulary,
        score_threshold=self.score_threshold,
        top_k=self.top_k, nms=bool(inf.nms),
        nms_threshold=float(inf.nms_threshold),
        nms_alpha=float(inf.nms_alpha), nms_beta=float(inf.nms_beta))

  def predict(self, pixels: np.ndarray) -> List[Dict[str, Any]]:
    """Triplets of one [h, w, 3] uint8 RGB image."""
    return self.predict_batch(images.preprocess(pixels, self.config))


def build_predictor(config, restored: restore.Restored, *, verbs: Any = "",
                    objects: Any = "", prompts_file: str = "",
                    score_threshold: float = 0.3, top_k: int = 10,
                    clip_params: Optional[Mapping[str, Any]] = None
                    ) -> Predictor:
  """A Predictor for restored weights and a (closed or open) class list.

  Args:
    config: the run config.
    restored: `restore_checkpoint` output.
    verbs: open vocabulary verbs (comma-separated or a list).
    objects: open vocabulary objects.
    prompts_file: open vocabulary prompts file.
    score_threshold: minimum confidence (`score`) of a triplet.
    top_k: triplets per image.
    clip_params: CLIP text params (default:
      `clip_text.clip_text_params(config)`).

  Returns:
    The Predictor.
  """
  vocabulary = open_vocabulary.vocabulary_from_args(config, verbs, objects,
                                                    prompts_file)
  if vocabulary.is_open:
    logging.info("Open vocabulary: %d interaction prompts, %d candidates, "
                 "new objects %s.", vocabulary.num_classes,
                 vocabulary.table.num_candidates,
                 list(vocabulary.new_objects) or "none")
  if clip_params is None:
    clip_params = clip_text.clip_text_params(config)
  return Predictor(config, restored.variables, vocabulary, clip_params,
                   score_threshold=score_threshold, top_k=top_k)
