"""The class vocabulary a model scores: prompts, names and candidate table.

A trained KI2HOI scores interactions by cosine similarity against frozen CLIP
text embeddings that are a call argument of the model (docs/contracts.md,
Model), so the class list is data: a `Vocabulary` holds the interaction
prompts (one per logit column), the verb and object names, and the candidate
table of post-processing that maps each (verb, object) candidate to its
columns. Training and evaluation use the closed vocabulary of the dataset
(`closed_vocabulary`); prediction may build an open one from user names
(`inference/open_vocabulary.py`).

* `model.interaction_space='hoi'`: one prompt per (verb, object) combination,
  `metadata.hoi_prompt(verb, object, style)`, e.g. "a photo of a person
  throwing a frisbee"; the interaction logit of a column is the score of that
  HOI and the object score is read at the object of the combination.
* `model.interaction_space='verb'`: one prompt per verb,
  `metadata.verb_prompt(verb, style)` ("a photo of a person throwing
  something"); every (verb, object) combination is a candidate whose score
  fuses the verb logit with the object score (`config.inference.score_fusion`).

`style` is `config.model.prompt_style`: 'gerund' (above, GEN-VLKT's and
HOICLIP's prompts) or 'bare' ("a photo of a person throw a frisbee").

With `model.classifier='linear'` (paper Table IV row a) the interaction head
is a learned linear layer with one output per training class, not a cosine
against text embeddings, so it scores its training classes only:
`evaluation_vocabulary` is then the closed vocabulary restricted to them. In a
zero-shot split the unseen classes get no candidate, their AP is 0 and
`mAP_unseen` is 0 by construction (`mAP_seen` is the comparable number);
open vocabularies are refused.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import postprocess


class VocabularyError(ValueError):
  """A class list cannot be used with the model."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """The classes scored at inference.

  Attributes:
    interaction_space: 'hoi' | 'verb' (`config.model.interaction_space`).
    prompts: [C] interaction prompts, one per logit column.
    verbs: verb names indexed by `table.verb_index` (reported as `verb`).
    objects: object classes of the (possibly extended) object classifier,
      indexed by `table.object_index`; the first `num_training_objects` are
      the training classes, the rest were added.
    num_training_objects: K of the trained object classifier.
    table: candidate table of post-processing (one row per (verb, object)
      candidate; `hoi_index` is the HICO-DET HOI index, or -1).
    is_open: True when built from user verbs/objects/prompts.
  """
  interaction_space: str
  prompts: Tuple[str, ...]
  verbs: Tuple[str, ...]
  objects: Tuple[str, ...]
  num_training_objects: int
  table: postprocess.CandidateTable
  is_open: bool = False

  @property
  def num_classes(self) -> int:
    """C, the number of interaction text embeddings."""
    return len(self.prompts)

  @property
  def new_objects(self) -> Tuple[str, ...]:
    """Objects outside the training list (added to the object classifier)."""
    return self.objects[self.num_training_objects:]

  def new_object_prompts(self) -> List[str]:
    """CLIP prompts of the new objects, 'a photo of a/an [object]'."""
    return [metadata.object_prompt(o) for o in self.new_objects]

  def object_prompts(self) -> List[str]:
    """CLIP prompts of every object, training ones first."""
    return [metadata.object_prompt(o) for o in self.objects]


def training_objects(dataset: str) -> Tuple[str, ...]:
  """Object classes of the trained object classifier (K; V-COCO has 81)."""
  if dataset == "vcoco":
    return metadata.vcoco().objects
  return metadata.hico().objects


def training_verbs(dataset: str) -> Tuple[str, ...]:
  """Default verbs of an open vocabulary given only objects."""
  if dataset == "vcoco":
    return metadata.vcoco().actions
  return metadata.hico().verbs


def interaction_class_indices(config, split: str = "train") -> np.ndarray:
  """Columns of the full label space used by the interaction classifier.

  Training in a zero-shot split uses the seen classes only (GEN-VLKT's
  `--del_unseen`); evaluation uses all classes.

  Args:
    config: experiment config (dataset.name, dataset.zero_shot_split,
      model.interaction_space).
    split: 'train' or 'eval'.

  Returns:
    [C] sorted int32 indices into `hoi_labels` ('hoi') or `verb_labels`
    ('verb') of the batch.
  """
  if config.dataset.name == "vcoco":
    return np.arange(metadata.vcoco().num_verb_classes, dtype=np.int32)
  meta = metadata.hico()
  space = config.model.interaction_space
  num = meta.num_hois if space == "hoi" else meta.num_verbs
  if split == "eval" or not config.dataset.zero_shot_split:
    return np.arange(num, dtype=np.int32)
  seen = meta.seen_hois(config.dataset.zero_shot_split)
  if space == "hoi":
    return np.asarray(seen, np.int32)
  # Verb space: a verb is seen when it has at least one seen HOI.
  return np.asarray(sorted({meta.hois[h][0] for h in seen}), np.int32)


def closed_vocabulary(config) -> Vocabulary:
  """The training dataset's full class list (as evaluation scores it).

  Args:
    config: the run config (`dataset.name`, `model.interaction_space`,
      `model.prompt_style`).

  Returns:
    The Vocabulary: HICO-DET 'hoi' (600 prompts, `hoi_prompts(style)`),
    HICO-DET 'verb' (117 `verb_prompts(style)`, candidates of
    `verb_object_matrix()`), or V-COCO (29 verb classes, candidates of the
    V-COCO prior).
  """
  space = config.model.interaction_space
  style = config.model.prompt_style
  if config.dataset.name == "vcoco":
    # Imported lazily: V-COCO post-processing pulls in its evaluator.
    from ki2hoi_jax.evaluation import vcoco_postprocess  # pylint: disable=g-import-not-at-top
    meta = metadata.vcoco()
    return Vocabulary(space, tuple(meta.verb_prompts(style)),
                      meta.verb_classes, meta.objects, len(meta.objects),
                      vcoco_postprocess.candidate_table())
  meta = metadata.hico()
  prompts = (meta.hoi_prompts(style) if space == "hoi"
             else meta.verb_prompts(style))
  return Vocabulary(space, tuple(prompts), meta.verbs, meta.objects,
                    meta.num_objects, postprocess.candidate_table(space))


VERB_QUERIES = ("training_classes", "all_classes")


def verb_query_prompts(config, prompts: Sequence[str]) -> Tuple[str, ...]:
  """Prompts whose text embeddings become the verb decoder's class queries.

  The verb extraction decoder turns one CLIP text embedding per class into a
  query for V_verb, which the interaction decoder attends to. At evaluation
  (and prediction) the final cosine classifier scores `prompts`, every class
  of the vocabulary; `config.model.verb_queries` picks the decoder's queries:

  * 'training_classes': the training classifier's classes, as in training
    (the seen classes of a zero-shot split), so the features of seen classes
    are those the model was trained with and only the final classifier
    gains the unseen prompts -- what GEN-VLKT and HOICLIP do at evaluation.
  * 'all_classes': the scored `prompts` themselves (unseen classes also get
    a query of their own).

  Args:
    config: the run config (`model.verb_queries`, and what
      `interaction_class_indices` reads).
    prompts: [C] the prompts the classifier scores.

  Returns:
    The query prompts: [C_train] or [C].
  """
  mode = config.model.verb_queries
  if mode == "all_classes":
    return tuple(prompts)
  if mode != "training_classes":
    raise VocabularyError(f"config.model.verb_queries must be one of "
                          f"{VERB_QUERIES}, got {mode!r}")
  closed = closed_vocabulary(config).prompts
  return tuple(closed[i] for i in interaction_class_indices(config, "train"))


def trained_class_mask(config, prompts: Sequence[str]
                       ) -> Optional[np.ndarray]:
  """[C] bool: prompt c is one of the training classifier's prompts.

  The classes outside it are those `inference.clip_pair_fusion` gives CLIP's
  crop score (models/clip_pair_scores.py): the unseen classes of a zero-shot
  split, and new prompts of an open vocabulary. None when every prompt is a
  training class: no crop pass runs at all.
  """
  closed = closed_vocabulary(config).prompts
  training = {closed[i] for i in interaction_class_indices(config, "train")}
  mask = np.asarray([p in training for p in prompts], bool)
  return None if mask.all() else mask


def trained_object_mask(config, objects: Sequence[str]
                        ) -> Optional[np.ndarray]:
  """[K'] bool: object k had training labels (an object of a seen HOI).

  The objects outside it are those `inference.clip_pair_fusion` gives CLIP's
  object-crop score (models/clip_pair_scores.py): the unseen objects of a
  zero-shot split ('uo') and the new objects of an open vocabulary. None
  when every object is trained: no object-crop pass runs.

  Args:
    config: the run config (`dataset.name`, `dataset.zero_shot_split`).
    objects: the object classes of the (possibly extended) classifier,
      `Vocabulary.objects`.
  """
  trained = set(training_objects(config.dataset.name))
  split = config.dataset.zero_shot_split
  if config.dataset.name != "vcoco" and split:
    meta = metadata.hico()
    trained = {meta.objects[meta.hois[h][1]] for h in meta.seen_hois(split)}
  mask = np.asarray([o in trained for o in objects], bool)
  return None if mask.all() else mask


def candidate_prompts(config, vocabulary: Vocabulary) -> List[str]:
  """[H] HOI prompt of each candidate of `vocabulary.table`, in its order.

  'a photo of a person riding a bicycle' (`metadata.hoi_prompt`, style
  `config.model.prompt_style`): what CLIP scores a pair crop against for
  the untrained candidates of `trained_candidate_mask`.
  """
  table = vocabulary.table
  return [metadata.hoi_prompt(vocabulary.verbs[v], vocabulary.objects[o],
                              config.model.prompt_style)
          for v, o in zip(table.verb_index.tolist(),
                          table.object_index.tolist())]


def trained_candidate_mask(config, vocabulary: Vocabulary
                           ) -> Optional[np.ndarray]:
  """[H] bool: False for the untrained combinations of trained verbs.

  In the 'verb' interaction space a candidate (verb, object) is scored by
  its verb's logit column, which `trained_class_mask` calls trained as soon
  as the verb had any training HOI. The unseen HOIs of 'rf_uc', 'nf_uc',
  'uc' and 'uo' are such combinations: trained verb, (verb, object) never
  labelled. `inference.clip_pair_fusion` gives exactly those CLIP's crop
  score against their HOI prompt (models/clip_pair_scores.py); a candidate
  of an untrained verb keeps the verb-level fusion.

  Args:
    config: the run config (`dataset.name`, `dataset.zero_shot_split`,
      `model.interaction_space`).
    vocabulary: the scored classes.

  Returns:
    The mask, or None where there are no such candidates (the 'hoi' space,
    where every candidate is a column of its own; V-COCO; a closed
    vocabulary without a zero-shot split).
  """
  if vocabulary.interaction_space != "verb" or config.dataset.name == "vcoco":
    return None
  meta = metadata.hico()
  split = config.dataset.zero_shot_split
  seen = meta.seen_hois(split) if split else range(meta.num_hois)
  pairs = {(meta.verbs[meta.hois[h][0]], meta.objects[meta.hois[h][1]])
           for h in seen}
  verbs = trained_class_mask(config, vocabulary.prompts)
  table = vocabulary.table
  mask = np.asarray(
      [(vocabulary.verbs[v], vocabulary.objects[o]) in pairs
       or (verbs is not None and not verbs[c])
       for v, o, c in zip(table.verb_index.tolist(),
                          table.object_index.tolist(),
                          table.interaction_column.tolist())], bool)
  return None if mask.all() else mask


def verb_query_embeddings(config, prompts: Sequence[str],
                          embeddings: np.ndarray,
                          embed: Callable[[Sequence[str]], np.ndarray]
                          ) -> np.ndarray:
  """Text embeddings of `verb_query_prompts(config, prompts)`.

  Rows of `embeddings` (those of `prompts`) are reused when every query
  prompt is among `prompts` (the closed vocabulary); otherwise (an open
  vocabulary without the training classes) `embed` computes them.

  Args:
    config: the run config (`model.verb_queries`).
    prompts: [C] the prompts the classifier scores.
    embeddings: [C, E] their text embeddings.
    embed: prompts -> [N, E] text embeddings (the CLIP text tower).

  Returns:
    [C_q, E] float array.
  """
  queries = verb_query_prompts(config, prompts)
  column = {p: i for i, p in enumerate(prompts)}
  if all(q in column for q in queries):
    return np.asarray(embeddings)[[column[q] for q in queries]]
  return np.asarray(embed(queries))


def evaluation_vocabulary(config) -> Vocabulary:
  """The classes evaluation and closed-vocabulary prediction score.

  The closed vocabulary, except with `model.classifier='linear'`: then only
  the training classes (`interaction_class_indices(config, 'train')`, in
  that order, one logit column each; module docstring).

  Args:
    config: the run config.

  Returns:
    The Vocabulary.
  """
  vocab = closed_vocabulary(config)
  if config.model.classifier != "linear":
    return vocab
  classes = interaction_class_indices(config, "train")
  if len(classes) == vocab.num_classes:
    return vocab
  space = config.model.interaction_space
  table = (postprocess.candidate_table(space, hoi_classes=classes)
           if space == "hoi" else
           postprocess.candidate_table(space, verb_classes=classes))
  return dataclasses.replace(
      vocab, prompts=tuple(vocab.prompts[int(c)] for c in classes),
      table=table)


def clip_fusion_inputs(config, vocabulary: Vocabulary,
                       embed: Callable[[Sequence[str]], np.ndarray]
                       ) -> Dict[str, np.ndarray]:
  """The inputs of `inference.clip_pair_fusion` (evaluation/clip_fusion.py).

  What CLIP scores at inference (models/clip_pair_scores.py): the
  untrained interaction columns (`trained_classes`), the untrained objects
  (`trained_objects`, `object_text_embeddings`) and, in the 'verb' space,
  the untrained combinations of trained verbs (`trained_candidates`,
  `candidate_text_embeddings`, `candidate_columns`). A mask that would be
  all True is left out, and with it its crop pass.

  Args:
    config: the run config (`inference.clip_pair_fusion`,
      `model.classifier`, and what the masks read).
    vocabulary: the scored classes (`evaluation_vocabulary`, or an open
      one).
    embed: prompts -> [N, E] text embeddings (the CLIP text tower); called
      only for what is fused: the object prompts (`object_prompts`) when
      an object is untrained, the candidates' HOI prompts when a candidate
      is.

  Returns:
    {} with the fusion off (w = 0) or a linear classifier, else the
    arguments above as NumPy arrays.
  """
  if (float(config.inference.clip_pair_fusion) <= 0
      or config.model.classifier != "clip_text"):
    return {}
  out = {}
  trained = trained_class_mask(config, vocabulary.prompts)
  if trained is not None:
    out["trained_classes"] = trained
  objects = trained_object_mask(config, vocabulary.objects)
  if objects is not None:
    out["trained_objects"] = objects
    out["object_text_embeddings"] = np.asarray(
        embed(vocabulary.object_prompts()))
  candidates = trained_candidate_mask(config, vocabulary)
  if candidates is not None:
    out["trained_candidates"] = candidates
    out["candidate_columns"] = vocabulary.table.interaction_column.astype(
        np.int32)
    out["candidate_text_embeddings"] = np.asarray(
        embed(candidate_prompts(config, vocabulary)))
  return out

