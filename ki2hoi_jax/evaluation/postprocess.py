"""Inference post-processing: model outputs -> per-image HOI triplets.

Follows GEN-VLKT/HOICLIP (docs: docs/datasets.md section 5) with the score fusion
selectable by `config.inference.score_fusion`:

1. Boxes: predicted normalised `cxcywh` (relative to the valid image region)
   -> absolute `[x1, y1, x2, y2]` in the ORIGINAL image (scaled by
   `orig_size`; no clipping).
2. Score of query q for candidate HOI class c with verb v(c), object o(c):
   * 'genvlkt': `sigmoid(inter[q, col(c)]) + sigmoid(obj_logit[q, o(c)])**2`
     (literally docs/datasets.md section 5 step 2 and GEN-VLKT's code: a *sigmoid* of
     the object logit, not a softmax, squared and added).
   * 'sum' (paper eq. 18): `S_h + S_o + S_verb` with `S_h = softmax(human
     logits)[person]`, `S_o = softmax(object logits over K+1)[o(c)]`,
     `S_verb = sigmoid(inter[q, col(c)])`.
   * 'product': `S_h * S_o * S_verb`.
   `col(c)` is the logit column of c: c itself (or its position in a subset
   of HOIs) in the 'hoi' interaction space, and the verb v(c) in the 'verb'
   space, where every valid (verb, object) pair of `verb_object_matrix()`
   becomes an HOI candidate.
3. Top-k (default 100) of the Q x H scores; exact ties keep the lower flat
   index (query-major), i.e. a stable descending argsort. On request
   (`select_top_k(..., with_confidence=True)`, used by prediction) the
   confidence of each selected candidate comes along: the product
   `S_h * S_o * S_verb` of the three probabilities (the 'product' fusion
   whatever fusion ranks), which reads as a probability where the 'sum'
   fusion does not (a confident pair scores about 2 of 3 for every verb).
4. Triplet NMS per HOI class: greedily keep the best and drop every other
   candidate of the class with `IoU_h**alpha * IoU_o**beta > threshold`
   (+1-pixel IoU, touching boxes 0; see `boxes.py`). NOTE: GEN-VLKT's own NMS
   uses `max(0, w + 1)` and so gives touching boxes a 1-pixel overlap; docs/datasets.md
   asks for the evaluator's convention, which only differs for boxes that
   touch or are degenerate.

Steps 2-3 are `jnp` and jittable (`select_top_k`, vectorised over the batch);
box conversion and NMS run on the host in NumPy (`decode_predictions`). The
output is the GEN-VLKT predictions format (docs/contracts.md "Predictions").
"""

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orjson

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import boxes as box_lib

SCORE_FUSIONS = ("genvlkt", "sum", "product")
INTERACTION_SPACES = ("hoi", "verb")
PERSON_COCO_ID = 1


@dataclasses.dataclass(frozen=True, eq=False)
class CandidateTable:
  """The HOI classes that post-processing scores, one column each.

  Tables compare and hash by value, so that a jitted function can take one
  as a static argument (its arrays are constants of the program).

  Attributes:
    interaction_column: [H] int32, column of `pred_interaction_logits` that
      scores the candidate.
    object_index: [H] int32, object index (0..79) of the candidate's HOI.
    verb_index: [H] int32, verb index (0..116).
    hoi_index: [H] int32, HOI index (0..599); written as `hoi_category_id - 1`.
    num_columns: C, the number of interaction logits the table expects;
      None = `max(interaction_column) + 1`.
  """
  interaction_column: np.ndarray
  object_index: np.ndarray
  verb_index: np.ndarray
  hoi_index: np.ndarray
  num_columns: Optional[int] = None

  @property
  def num_candidates(self) -> int:
    return int(self.hoi_index.shape[0])

  def _key(self):
    arrays = map(np.asarray, (self.interaction_column, self.object_index,
                              self.verb_index, self.hoi_index))
    return (self.num_columns,) + tuple((a.dtype.str, a.shape, a.tobytes())
                                       for a in arrays)

  def __eq__(self, other):
    return isinstance(other, CandidateTable) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())


def hoi_candidate_table(
    hoi_classes: Optional[Sequence[int]] = None) -> CandidateTable:
  """Candidates of the 'hoi' interaction space.

  Args:
    hoi_classes: [C] HOI index of each interaction-logit column; None = all
      600 in official order (column c is HOI c). A subset (e.g. the seen
      classes of a zero-shot classifier) scores only those HOIs.

  Returns:
    The candidate table (H = C).
  """
  meta = metadata.hico()
  hois = (np.arange(meta.num_hois) if hoi_classes is None
          else np.asarray(hoi_classes, np.int64))
  if hois.ndim != 1 or hois.size == 0 or hois.min() < 0 or (
      hois.max() >= meta.num_hois):
    raise ValueError(f"hoi_classes must be HOI indices in [0, "
                     f"{meta.num_hois}), got {hois!r}")
  return CandidateTable(
      interaction_column=np.arange(hois.size, dtype=np.int32),
      object_index=meta.hoi_object[hois].astype(np.int32),
      verb_index=meta.hoi_verb[hois].astype(np.int32),
      hoi_index=hois.astype(np.int32),
      num_columns=int(hois.size))


def verb_candidate_table(
    verb_object_matrix: Optional[np.ndarray] = None,
    verb_classes: Optional[Sequence[int]] = None) -> CandidateTable:
  """Candidates of the 'verb' interaction space (C = 117 verb logits).

  Args:
    verb_object_matrix: [117, 80] validity matrix (corre_hico); None =
      `metadata.hico().verb_object_matrix()`. Each nonzero (verb, object) is a
      candidate; it must be one of the 600 HOIs.
    verb_classes: [C] verb index of each interaction-logit column when the
      classifier covers a subset of the 117 verbs (a linear head over the
      seen verbs); only their candidates are scored. None = all verbs.

  Returns:
    The candidate table, ordered by HOI index.
  """
  meta = metadata.hico()
  matrix = (meta.verb_object_matrix() if verb_object_matrix is None
            else np.asarray(verb_object_matrix))
  column = np.arange(matrix.shape[0])
  if verb_classes is not None:
    subset = np.asarray(verb_classes, np.int64)
    if subset.ndim != 1 or subset.size == 0 or subset.min() < 0 or (
        subset.max() >= matrix.shape[0]) or np.unique(subset).size != (
            subset.size):
      raise ValueError(f"verb_classes must be distinct verb indices in [0, "
                       f"{matrix.shape[0]}), got {subset!r}")
    keep = np.zeros(matrix.shape[0], bool)
    keep[subset] = True
    matrix = matrix * keep[:, None]
    column[subset] = np.arange(subset.size)
  verbs, objects = np.nonzero(matrix)
  hois = []
  for v, o in zip(verbs.tolist(), objects.tolist()):
    h = meta.hoi_index(v, o)
    if h is None:
      raise ValueError(f"verb_object_matrix marks ({meta.verbs[v]}, "
                       f"{meta.objects[o]}), which is not a HICO-DET HOI")
    hois.append(h)
  hois = np.asarray(hois, np.int32)
  order = np.argsort(hois, kind="stable")
  return CandidateTable(
      interaction_column=column[verbs[order]].astype(np.int32),
      object_index=objects[order].astype(np.int32),
      verb_index=verbs[order].astype(np.int32),
      hoi_index=hois[order],
      num_columns=int(matrix.shape[0] if verb_classes is None
                      else len(verb_classes)))


@functools.lru_cache(maxsize=None)
def _default_table(interaction_space: str) -> CandidateTable:
  if interaction_space == "hoi":
    return hoi_candidate_table()
  if interaction_space == "verb":
    return verb_candidate_table()
  raise ValueError(f"interaction_space must be one of {INTERACTION_SPACES}, "
                   f"got {interaction_space!r}")


def candidate_table(interaction_space: str,
                    hoi_classes: Optional[Sequence[int]] = None,
                    verb_classes: Optional[Sequence[int]] = None
                    ) -> CandidateTable:
  """The candidate table of `model.interaction_space` (cached default).

  `hoi_classes` ('hoi') or `verb_classes` ('verb') restrict it to the
  classes of a classifier over a subset (one logit column each).
  """
  if hoi_classes is not None:
    if interaction_space != "hoi":
      raise ValueError("hoi_classes only applies to interaction_space='hoi'")
    return hoi_candidate_table(hoi_classes)
  if verb_classes is not None:
    if interaction_space != "verb":
      raise ValueError("verb_classes only applies to "
                       "interaction_space='verb'")
    return verb_candidate_table(verb_classes=verb_classes)
  return _default_table(interaction_space)


def candidate_scores(interaction_logits: jnp.ndarray,
                     obj_logits: jnp.ndarray,
                     human_logits: Optional[jnp.ndarray],
                     table: CandidateTable,
                     score_fusion: str,
                     candidate_logits: Optional[jnp.ndarray] = None
                     ) -> jnp.ndarray:
  """Fused score of every (query, candidate HOI).

  Args:
    interaction_logits: [B, Q, C] `pred_interaction_logits`.
    obj_logits: [B, Q, K + 1] `pred_obj_logits` (last = no-object).
    human_logits: [B, Q, 2] `pred_human_logits` ([person, no-object]); may be
      None for 'genvlkt'.
    table: candidate table with H columns.
    score_fusion: 'genvlkt' | 'sum' | 'product' (module docstring).
    candidate_logits: [B, Q, H] `pred_candidate_logits` (the model's
      interaction logit of each candidate, CLIP-fused on the untrained
      ones): used instead of the columns of `interaction_logits` when given.

  Returns:
    [B, Q, H] float32 scores.
  """
  obj_logits = jnp.asarray(obj_logits, jnp.float32)
  if candidate_logits is None:
    s_verb = jax.nn.sigmoid(jnp.asarray(interaction_logits, jnp.float32))[
        ..., table.interaction_column]
  else:
    s_verb = jax.nn.sigmoid(jnp.asarray(candidate_logits, jnp.float32))
  if score_fusion == "genvlkt":
    s_obj = jax.nn.sigmoid(obj_logits)[..., table.object_index]
    return s_verb + s_obj * s_obj
  if score_fusion not in ("sum", "product"):
    raise ValueError(f"score_fusion must be one of {SCORE_FUSIONS}, got "
                     f"{score_fusion!r}")
  if human_logits is None:
    raise ValueError(f"score_fusion={score_fusion!r} needs pred_human_logits")
  s_obj = jax.nn.softmax(obj_logits, axis=-1)[..., table.object_index]
  s_h = jax.nn.softmax(jnp.asarray(human_logits, jnp.float32),
                       axis=-1)[..., :1]  # [B, Q, 1]
  if score_fusion == "sum":
    return s_h + s_obj + s_verb
  return s_h * s_obj * s_verb


def select_top_k(outputs: Mapping[str, Any], table: CandidateTable,
                 score_fusion: str, top_k: int, *,
                 with_confidence: bool = False) -> Dict[str, jnp.ndarray]:
  """Scores and the top-k (query, candidate) pairs of each image (jittable).

  `score_fusion`, `top_k` and `with_confidence` are static; `table` is a
  constant.

  Args:
    outputs: model outputs with `pred_interaction_logits` [B, Q, C],
      `pred_obj_logits` [B, Q, K+1], (for 'sum'/'product')
      `pred_human_logits` [B, Q, 2] and optionally `pred_candidate_logits`
      [B, Q, H] (`candidate_scores`).
    table: candidate table (H candidates).
    score_fusion: 'genvlkt' | 'sum' | 'product'.
    top_k: candidates kept per image (clipped to Q * H).
    with_confidence: also return `confidences`.

  Returns:
    Dict of [B, k] arrays: `scores` (float32, descending; ties keep the lower
    flat index q * H + h), `queries` (int32 query index) and `candidates`
    (int32 column of `table`); with `with_confidence`, `confidences`
    (float32 `S_h * S_o * S_verb` of each selected candidate, the 'product'
    fusion; needs `pred_human_logits`).
  """
  def fused(fusion):
    return candidate_scores(
        outputs["pred_interaction_logits"], outputs["pred_obj_logits"],
        outputs.get("pred_human_logits"), table, fusion,
        outputs.get("pred_candidate_logits"))

  scores = fused(score_fusion)
  b, q, h = scores.shape
  k = min(int(top_k), q * h)
  # lax.top_k orders equal values by lower index first.
  top_scores, flat = jax.lax.top_k(scores.reshape(b, q * h), k)
  selected = {"scores": top_scores,
              "queries": (flat // h).astype(jnp.int32),
              "candidates": (flat % h).astype(jnp.int32)}
  if with_confidence:
    product = scores if score_fusion == "product" else fused("product")
    selected["confidences"] = jnp.take_along_axis(
        product.reshape(b, q * h), flat, axis=1)
  return selected


def to_original_xyxy(boxes: np.ndarray, orig_size: np.ndarray) -> np.ndarray:
  """Normalised cxcywh -> absolute xyxy in the original image (no clipping).

  Args:
    boxes: [B, Q, 4] normalised `cxcywh` relative to the valid image region.
    orig_size: [B, 2] original (h, w).

  Returns:
    [B, Q, 4] float64 `[x1, y1, x2, y2]` pixels.
  """
  xyxy = box_lib.cxcywh_to_xyxy(np.asarray(boxes, np.float64))
  h, w = np.asarray(orig_size, np.float64).T
  scale = np.stack([w, h, w, h], axis=-1)[:, None, :]  # [B, 1, 4]
  return xyxy * scale


def triplet_nms(sub_boxes: np.ndarray, obj_boxes: np.ndarray,
                scores: np.ndarray, labels: np.ndarray, threshold: float,
                alpha: float = 1.0, beta: float = 0.5) -> np.ndarray:
  """Greedy per-class triplet NMS (docs/datasets.md section 5 step 4).

  Args:
    sub_boxes: [N, 4] human boxes, pixels xyxy.
    obj_boxes: [N, 4] object boxes.
    scores: [N] scores.
    labels: [N] class of each triplet; NMS runs within each class.
    threshold: a candidate is removed when
      `IoU_h**alpha * IoU_o**beta > threshold` with a kept one of its class.
    alpha: exponent of the human IoU.
    beta: exponent of the object IoU.

  Returns:
    [M] int indices of the kept triplets, in descending score order (ties
    keep input order).
  """
  scores = np.asarray(scores)
  n = scores.shape[0]
  if n == 0:
    return np.zeros((0,), np.int64)
  order = np.argsort(-scores, kind="stable")
  sub = np.asarray(sub_boxes, np.float64)[order]
  obj = np.asarray(obj_boxes, np.float64)[order]
  lab = np.asarray(labels)[order]
  overlap = (np.power(box_lib.pairwise_iou_plus1(sub, sub), alpha) *
             np.power(box_lib.pairwise_iou_plus1(obj, obj), beta))
  conflict = (overlap > threshold) & (lab[:, None] == lab[None, :])
  conflict &= np.triu(np.ones((n, n), bool), k=1)  # Only later candidates.
  keep = np.ones(n, bool)
  for i in np.flatnonzero(conflict.any(axis=1)):
    if keep[i]:
      keep[conflict[i]] = False
  return order[keep]


def decode_predictions(selected: Mapping[str, Any], sub_boxes: Any,
                       obj_boxes: Any, orig_size: Any,
                       file_names: Sequence[Optional[str]],
                       table: CandidateTable, *, nms: bool = True,
                       nms_threshold: float = 0.7, nms_alpha: float = 1.0,
                       nms_beta: float = 0.5) -> List[Dict[str, Any]]:
  """Host part: boxes to pixels, triplet NMS, GEN-VLKT prediction entries.

  Args:
    selected: output of `select_top_k` ([B, k] `scores`, `queries`,
      `candidates`).
    sub_boxes: [B, Q, 4] `pred_sub_boxes` (normalised cxcywh).
    obj_boxes: [B, Q, 4] `pred_obj_boxes`.
    orig_size: [B, 2] original (h, w) of each image.
    file_names: [B] file name of each image; None marks a padding example,
      which produces no entry.
    table: the candidate table used by `select_top_k`.
    nms: apply per-HOI-class triplet NMS.
    nms_threshold: NMS threshold.
    nms_alpha: NMS human-IoU exponent.
    nms_beta: NMS object-IoU exponent.

  Returns:
    One dict per non-padding image: `file_name`, `predictions` (boxes:
    the kept triplets' human boxes, category 1, then their object boxes with
    the COCO id of the HOI's object, each box once) and `hoi_prediction`
    (`subject_id`/`object_id` index `predictions`, `category_id` = verb id
    1-based, `hoi_category_id` 1-based, `score`), in descending score.
  """
  meta = metadata.hico()
  coco_ids = np.asarray(meta.coco_category_ids)
  scores = np.asarray(selected["scores"])
  queries = np.asarray(selected["queries"])
  cands = np.asarray(selected["candidates"])
  sub_xyxy = to_original_xyxy(sub_boxes, orig_size)
  obj_xyxy = to_original_xyxy(obj_boxes, orig_size)
  if len(file_names) != scores.shape[0]:
    raise ValueError(f"{len(file_names)} file names for a batch of "
                     f"{scores.shape[0]}")
  results = []
  for b, file_name in enumerate(file_names):
    if file_name is None:
      continue
    q, c, s = queries[b], cands[b], scores[b]
    hoi = table.hoi_index[c]
    if nms:
      keep = triplet_nms(sub_xyxy[b, q], obj_xyxy[b, q], s, hoi,
                         nms_threshold, nms_alpha, nms_beta)
    else:
      keep = np.argsort(-s, kind="stable")
    q, c, s, hoi = q[keep], c[keep], s[keep], hoi[keep]
    obj = table.object_index[c]
    verb = table.verb_index[c]
    sub_ids: Dict[int, int] = {}
    obj_ids: Dict[tuple, int] = {}
    for qi, oi in zip(q.tolist(), obj.tolist()):
      sub_ids.setdefault(qi, len(sub_ids))
      obj_ids.setdefault((qi, oi), len(obj_ids))
    boxes_out = [{"bbox": sub_xyxy[b, qi].tolist(),
                  "category_id": PERSON_COCO_ID} for qi in sub_ids]
    boxes_out += [{"bbox": obj_xyxy[b, qi].tolist(),
                   "category_id": int(coco_ids[oi])} for qi, oi in obj_ids]
    n_sub = len(sub_ids)
    hois_out = [
        {"subject_id": sub_ids[qi],
         "object_id": n_sub + obj_ids[(qi, oi)],
         "category_id": vi + 1,
         "hoi_category_id": hi + 1,
         "score": si}
        for qi, oi, vi, hi, si in zip(q.tolist(), obj.tolist(),
                                      verb.tolist(), hoi.tolist(),
                                      s.tolist())]
    results.append({"file_name": file_name, "predictions": boxes_out,
                    "hoi_prediction": hois_out})
  return results


def postprocess(outputs: Mapping[str, Any], orig_size: Any,
                file_names: Sequence[Optional[str]], *,
                interaction_space: str = "hoi",
                hoi_classes: Optional[Sequence[int]] = None,
                score_fusion: str = "sum", top_k: int = 100,
                nms: bool = True, nms_threshold: float = 0.7,
                nms_alpha: float = 1.0,
                nms_beta: float = 0.5) -> List[Dict[str, Any]]:
  """Model outputs of a batch -> GEN-VLKT prediction entries.

  Args:
    outputs: model outputs (docs/contracts.md) with leading [B, Q]; jax or
      numpy arrays. `aux_outputs` and other keys are ignored.
    orig_size: [B, 2] original (h, w).
    file_names: [B] file names (None for padding examples).
    interaction_space: 'hoi' or 'verb' (`model.interaction_space`).
    hoi_classes: 'hoi' space only: HOI index of each logit column when the
      classifier covers a subset of the 600 HOIs.
    score_fusion: 'genvlkt' | 'sum' | 'product'.
    top_k: candidates kept per image before NMS.
    nms: per-HOI-class triplet NMS.
    nms_threshold: NMS threshold.
    nms_alpha: NMS human-IoU exponent.
    nms_beta: NMS object-IoU exponent.

  Returns:
    One entry per non-padding image (see `decode_predictions`).
  """
  table = candidate_table(interaction_space, hoi_classes)
  c = outputs["pred_interaction_logits"].shape[-1]
  expected = (int(table.interaction_column.max()) + 1
              if table.num_columns is None else table.num_columns)
  if c != expected:
    raise ValueError(f"interaction logits have {c} columns but the "
                     f"{interaction_space!r} candidate table expects "
                     f"{expected}")
  selected = jax.device_get(select_top_k(outputs, table, score_fusion, top_k))
  return decode_predictions(
      selected, jax.device_get(outputs["pred_sub_boxes"]),
      jax.device_get(outputs["pred_obj_boxes"]), orig_size, file_names, table,
      nms=nms, nms_threshold=nms_threshold, nms_alpha=nms_alpha,
      nms_beta=nms_beta)


def postprocess_from_config(outputs: Mapping[str, Any], orig_size: Any,
                            file_names: Sequence[Optional[str]], config: Any,
                            hoi_classes: Optional[Sequence[int]] = None
                            ) -> List[Dict[str, Any]]:
  """`postprocess` with settings from `config.inference` and
  `config.model.interaction_space`."""
  inf = config.inference
  return postprocess(
      outputs, orig_size, file_names,
      interaction_space=config.model.interaction_space,
      hoi_classes=hoi_classes, score_fusion=inf.score_fusion,
      top_k=inf.top_k, nms=inf.nms, nms_threshold=inf.nms_threshold,
      nms_alpha=inf.nms_alpha, nms_beta=inf.nms_beta)


def write_predictions(path: str, predictions: Sequence[Mapping[str, Any]]
                      ) -> None:
  """Writes prediction entries as a JSON list (orjson; numpy values ok)."""
  with open(path, "wb") as f:
    f.write(orjson.dumps(list(predictions),
                         option=orjson.OPT_SERIALIZE_NUMPY))


def read_predictions(path: str) -> List[Dict[str, Any]]:
  """Reads a predictions JSON file (a list of GEN-VLKT entries)."""
  with open(path, "rb") as f:
    data = orjson.loads(f.read())
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a JSON list of per-image entries, "
                     f"got {type(data).__name__}")
  return data
