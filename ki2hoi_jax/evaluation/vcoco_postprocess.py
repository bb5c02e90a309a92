"""V-COCO inference post-processing: model outputs -> role detection records.

Shares the score fusion, box conversion and triplet NMS of
`ki2hoi_jax.evaluation.postprocess` (HICO-DET); per image (docs/datasets.md
sections 5 and 7; docs/contracts.md):

1. Boxes: predicted normalised cxcywh -> absolute corners in the original image
   (no clipping).
2. HOI score of query q, verb class v (29, verb interaction space) and object o
   (81 V-COCO objects, 80 = no_object; the model's 82nd logit is the DETR
   background and never used), by `score_fusion`:
   * 'genvlkt': sigmoid(interaction[q, v]) + sigmoid(object_logit[q, o])**2
     (GEN-VLKT / HOICLIP);
   * 'sum': S_h + S_o + S_verb (paper eq. 18), with
     S_h = softmax(human)[person], S_o = softmax(object)[o] and
     S_verb = sigmoid(interaction[q, v]);
   * 'product': S_h * S_o * S_verb.
   The verb-class score of (q, v) is the maximum over the objects o allowed by
   the verb-object prior `metadata.vcoco().verb_object_matrix()` [29, 81], and
   that arg-max object is the pair's object class.
3. Keep the `top_k` highest of the Q x 29 scores.
4. Triplet NMS: group by (subject class, object class, verb class) (the
   subject is always a person); keep the best and drop others with
   IoU_h**alpha * IoU_o**beta > threshold (`postprocess.triplet_nms`, +1
   IoU of docs/datasets.md section 6). The predicted object box is used also for
   no_object candidates.
5. One record per query with a surviving candidate, in the predictions-file
   format of `ki2hoi_jax.evaluation.vcoco`: 'person_box', and for each kept
   verb class either '<action>_<role>' = object box + score (NaN box when the
   object class is no_object) or, for agent-only classes, '<action>_agent' =
   score. '<action>_agent' of an action with roles is its role score; for cut,
   hit and eat it is the larger of the two role scores.
"""

import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import postprocess as hico_postprocess
from ki2hoi_jax.evaluation import vcoco
from ki2hoi_jax.evaluation import vcoco_ap

Record = Dict[str, Any]
SCORE_FUSIONS = hico_postprocess.SCORE_FUSIONS


def candidate_table(prior: Optional[np.ndarray] = None
                    ) -> hico_postprocess.CandidateTable:
  """The V-COCO (verb class, object) candidates allowed by the prior.

  Args:
    prior: [29, 81] verb-object prior; None = `metadata.vcoco()` (cached).

  Returns:
    A `postprocess.CandidateTable` whose `interaction_column` / `verb_index`
    are verb classes (0..28), `object_index` V-COCO objects (0..80) and
    `hoi_index` the position in `metadata.vcoco().hoi_pairs` (-1 if absent).
  """
  if prior is None:
    return _default_table()
  meta = metadata.vcoco()
  lookup = {pair: i for i, pair in enumerate(meta.hoi_pairs)}
  verbs, objects = np.nonzero(np.asarray(prior) > 0)
  return hico_postprocess.CandidateTable(
      interaction_column=verbs.astype(np.int32),
      object_index=objects.astype(np.int32),
      verb_index=verbs.astype(np.int32),
      hoi_index=np.array([lookup.get((v, o), -1) for v, o in
                          zip(verbs.tolist(), objects.tolist())], np.int32))


@functools.lru_cache(maxsize=None)
def _default_table() -> hico_postprocess.CandidateTable:
  return candidate_table(metadata.vcoco().verb_object_matrix())


def verb_class_scores(interaction_logits: np.ndarray, obj_logits: np.ndarray,
                      human_logits: Optional[np.ndarray] = None,
                      prior: Optional[np.ndarray] = None,
                      score_fusion: str = "genvlkt"
                      ) -> Tuple[np.ndarray, np.ndarray]:
  """Verb-class scores and their object classes, masked by the prior.

  The HOI scores come from `postprocess.candidate_scores` (the fusion shared
  with HICO-DET, module docstring) over the allowed (verb, object) pairs.

  Args:
    interaction_logits: [..., Q, V] verb-class logits (V = 29).
    obj_logits: [..., Q, K + 1] object logits (K = 81, incl. no_object).
    human_logits: [..., Q, 2], needed by 'sum' / 'product'.
    prior: [V, K] verb-object prior (default: metadata.vcoco()).
    score_fusion: 'genvlkt' | 'sum' | 'product'.

  Returns:
    scores [..., Q, V] float64: maximum HOI score over the allowed objects;
    labels [..., Q, V] int32: the object class achieving it (lowest index
    on ties).
  """
  table = candidate_table(prior)
  hoi = np.asarray(hico_postprocess.candidate_scores(
      interaction_logits, obj_logits, human_logits, table, score_fusion),
                   np.float64)  # [..., Q, H]
  num_verbs = np.shape(interaction_logits)[-1]
  num_objects = np.shape(obj_logits)[-1] - 1
  full = np.full(hoi.shape[:-1] + (num_verbs, num_objects), -np.inf)
  full[..., table.verb_index, table.object_index] = hoi
  labels = np.argmax(full, axis=-1)
  scores = np.take_along_axis(full, labels[..., None], axis=-1)[..., 0]
  return scores, labels.astype(np.int32)


def build_records(sub_boxes: np.ndarray, obj_boxes: np.ndarray,
                  queries: np.ndarray, verbs: np.ndarray, objects: np.ndarray,
                  scores: np.ndarray) -> List[Record]:
  """Groups kept candidates into one detection record per query.

  Args:
    sub_boxes: [Q, 4] person corners of all queries.
    obj_boxes: [Q, 4] object corners of all queries.
    queries: [N] query of each kept candidate.
    verbs: [N] verb class of each.
    objects: [N] object class of each (80 = no_object -> NaN box).
    scores: [N] score of each.

  Returns:
    Records (predictions-file format), ordered by their best score.
  """
  meta = metadata.vcoco()
  no_object = meta.no_object_index
  records: Dict[int, Record] = {}
  best: Dict[int, float] = {}
  for q, v, o, s in zip(queries, verbs, objects, scores):
    q, v, o, s = int(q), int(v), int(o), float(s)
    rec = records.setdefault(
        q, {"person_box": [float(x) for x in sub_boxes[q]]})
    best[q] = max(best.get(q, -np.inf), s)
    key = vcoco_ap.agent_key(meta.verb_class_action[v])
    rec[key] = max(rec.get(key, -np.inf), s)
    if meta.verb_class_role[v]:
      box = ([float("nan")] * 4 if o == no_object
             else [float(x) for x in obj_boxes[q]])
      rec[meta.verb_classes[v]] = box + [s]
  order = sorted(records, key=lambda q: -best[q])
  return [records[q] for q in order]


def select_and_build(scores: np.ndarray, labels: np.ndarray,
                     sub_boxes: np.ndarray, obj_boxes: np.ndarray,
                     top_k: int = 100, nms: bool = True,
                     nms_threshold: float = 0.7, nms_alpha: float = 1.0,
                     nms_beta: float = 0.5) -> List[Record]:
  """Top-k, triplet NMS and records of one image.

  Args:
    scores: [Q, V] verb-class scores.
    labels: [Q, V] their object classes.
    sub_boxes: [Q, 4] person corners (pixels).
    obj_boxes: [Q, 4] object corners (pixels).
    top_k: candidates kept from the Q x V scores (ties: lower q * V + v).
    nms: apply triplet NMS grouped by (object class, verb class).
    nms_threshold: NMS threshold.
    nms_alpha: human-IoU exponent.
    nms_beta: object-IoU exponent.

  Returns:
    The image's detection records.
  """
  num_verbs = scores.shape[-1]
  flat = scores.reshape(-1)
  top = np.argsort(-flat, kind="stable")[:top_k]
  top = top[np.isfinite(flat[top])]
  queries, verbs = top // num_verbs, top % num_verbs
  objects = labels[queries, verbs]
  if nms:
    keep = hico_postprocess.triplet_nms(
        sub_boxes[queries], obj_boxes[queries], flat[top],
        objects.astype(np.int64) * num_verbs + verbs, nms_threshold,
        nms_alpha, nms_beta)
    queries, verbs, objects, top = (queries[keep], verbs[keep], objects[keep],
                                    top[keep])
  return build_records(sub_boxes, obj_boxes, queries, verbs, objects, flat[top])


def postprocess(outputs: Mapping[str, Any], orig_size: Any,
                prior: Optional[np.ndarray] = None,
                score_fusion: str = "genvlkt", top_k: int = 100,
                nms: bool = True, nms_threshold: float = 0.7,
                nms_alpha: float = 1.0, nms_beta: float = 0.5
                ) -> List[List[Record]]:
  """Detection records of a batch.

  Args:
    outputs: model outputs (docs/contracts.md) with leading [B, Q]:
      'pred_sub_boxes', 'pred_obj_boxes', 'pred_obj_logits' [B, Q, 82],
      'pred_interaction_logits' [B, Q, 29], and 'pred_human_logits' (for
      'sum' / 'product'); jax or numpy; other keys are ignored.
    orig_size: [B, 2] original (h, w).
    prior: [29, 81] verb-object prior (default: metadata.vcoco()).
    score_fusion: 'genvlkt' | 'sum' | 'product'.
    top_k: candidates kept per image from the Q x 29 scores before NMS.
    nms: triplet NMS.
    nms_threshold: NMS threshold.
    nms_alpha: human-IoU exponent.
    nms_beta: object-IoU exponent.

  Returns:
    B lists of records (predictions-file format of `vcoco`).
  """
  human = outputs.get("pred_human_logits")
  scores, labels = verb_class_scores(
      np.asarray(outputs["pred_interaction_logits"]),
      np.asarray(outputs["pred_obj_logits"]),
      None if human is None else np.asarray(human), prior, score_fusion)
  sub = hico_postprocess.to_original_xyxy(np.asarray(outputs["pred_sub_boxes"]),
                                          orig_size)
  obj = hico_postprocess.to_original_xyxy(np.asarray(outputs["pred_obj_boxes"]),
                                          orig_size)
  return [select_and_build(scores[b], labels[b], sub[b], obj[b], top_k, nms,
                           nms_threshold, nms_alpha, nms_beta)
          for b in range(scores.shape[0])]


def postprocess_image(outputs: Mapping[str, Any], orig_size: Sequence[float],
                      **kwargs) -> List[Record]:
  """`postprocess` of one image (outputs [Q, ...], orig_size (h, w))."""
  batch = {k: np.asarray(v)[None] for k, v in outputs.items()
           if k.startswith("pred_") and k != "aux_outputs"}
  return postprocess(batch, np.asarray(orig_size)[None], **kwargs)[0]


def prediction_entry(file_name: str, records: List[Record],
                     image_id: Optional[int] = None) -> Dict[str, Any]:
  """One predictions-file entry (image_id defaults to the file's number)."""
  if image_id is None:
    image_id = vcoco.image_id_from_file_name(file_name)
  return {"file_name": file_name, "image_id": image_id, "detections": records}


def postprocess_entries(outputs: Mapping[str, Any], orig_size: Any,
                        file_names: Sequence[Optional[str]],
                        **kwargs) -> List[Dict[str, Any]]:
  """Predictions-file entries of a batch; None file names (padding) dropped.

  Args:
    outputs: batched model outputs (see `postprocess`).
    orig_size: [B, 2] original (h, w).
    file_names: [B] file names, None for padding examples.
    **kwargs: `postprocess` options.

  Returns:
    One entry per non-padding image.
  """
  records = postprocess(outputs, orig_size, **kwargs)
  if len(file_names) != len(records):
    raise ValueError(f"{len(file_names)} file names for a batch of "
                     f"{len(records)}")
  return [prediction_entry(f, r) for f, r in zip(file_names, records)
          if f is not None]


def postprocess_from_config(outputs: Mapping[str, Any], orig_size: Any,
                            file_names: Sequence[Optional[str]], config: Any,
                            prior: Optional[np.ndarray] = None
                            ) -> List[Dict[str, Any]]:
  """`postprocess_entries` with the settings of `config.inference`."""
  inf = config.inference
  return postprocess_entries(
      outputs, orig_size, file_names, prior=prior,
      score_fusion=inf.score_fusion, top_k=inf.top_k, nms=inf.nms,
      nms_threshold=inf.nms_threshold, nms_alpha=inf.nms_alpha,
      nms_beta=inf.nms_beta)
