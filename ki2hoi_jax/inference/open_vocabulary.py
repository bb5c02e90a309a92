r"""Open-vocabulary class lists for prediction: new verbs and objects via CLIP.

A trained KI2HOI scores interactions by cosine similarity against frozen CLIP
text embeddings that are a call argument of the model (docs/contracts.md,
Model), so the interaction classes can be replaced at inference by the
embeddings of new prompts:

* `model.interaction_space='hoi'`: one prompt per (verb, object) combination,
  `metadata.hoi_prompt(verb, object, style)`, e.g. "a photo of a person
  throwing a frisbee"; the interaction logit of a column is the score of that
  HOI and the object score is read at the object of the combination. With V
  verbs and O objects there are C = V x O classes (verb-major order).
* `model.interaction_space='verb'`: one prompt per verb,
  `metadata.verb_prompt(verb, style)` ("a photo of a person throwing
  something"); every (verb, object) combination is a candidate whose score
  fuses the verb logit with the object score (`config.inference.score_fusion`),
  as in evaluation.

`style` is the `config.model.prompt_style` the model was trained with:
'gerund' (above; a new verb takes '-ing' by `metadata.gerund`'s spelling
rules, so write an irregular one as a plain prompt) or 'bare' ("a photo of a
person throw a frisbee").

Objects. The object classifier is NOT a call argument: it is a trained Dense
layer (`instance_interactor.ObjectClassifier`, `obj_visual_projection`) whose
K class columns were initialised from the CLIP embeddings of "a photo of a/an
[object]" and then trained. Objects of the training list keep their trained
column. Objects outside it are added by editing the parameters
(`extend_object_classifier`): a new column equal to the L2-normalised CLIP
embedding of "a photo of a/an [object]", rescaled to the mean norm of the
trained columns, with the mean trained bias, is inserted before the
no-object column, and the model is rebuilt with K + n object classes. The
trained columns have moved away from their CLIP initialisation, so new objects
compete with the known ones on unequal terms: expect lower recall for them.
Known objects are matched case-insensitively with spaces or underscores
("dining table" = "dining_table").

Class lists (`vocabulary_from_args`):
* nothing given: the closed vocabulary of the training dataset (the 600 HOIs
  or 117 verbs of HICO-DET, the 29 V-COCO verb classes), with the candidate
  tables of evaluation;
* `verbs` and/or `objects`: their cross product; a missing side defaults to
  all training verbs (HICO-DET: 117) or objects (80);
* a prompts file: one "verb,object" per line (that single combination) or a
  plain prompt (a line without a comma, used verbatim as the interaction
  prompt and paired with every object of `objects`, or every training object;
  its text is reported as the verb). Blank lines and lines starting with '#'
  are ignored. File classes are added after the cross product.

Limits. Open-vocabulary quality depends entirely on the CLIP weights: with
random or tiny CLIP (configs/demo.py, `init.clip_checkpoint=''`) the text
embeddings of new prompts carry no meaning and the output is noise; real use
needs the converted OpenAI CLIP ViT-B/32
(`python -m ki2hoi_jax.weights.convert_clip`,
`--config.init.clip_checkpoint=...`), the one the model was trained with.
Verbs never seen in training rely on CLIP's text-image alignment through the
verb extraction decoder and the interaction representation decoder, which were
trained only on the training classes (the paper's zero-shot setting); objects
never seen rely on the object classifier edit above. Scores of new classes are
not calibrated against the closed-vocabulary ones.
"""

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import flax
import numpy as np

from ki2hoi_jax.clip import text_embeddings as clip_text
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vocabulary as vocabulary_lib

_OBJ_PATH = ("instance_interactor", "obj_classifier", "obj_visual_projection")


# ------------------------------------------------------------------- parsing


def _clean(name: str) -> str:
  return re.sub(r"\s+", " ", name).strip()


def _key(name: str) -> str:
  return _clean(metadata.readable(name)).lower()


def parse_names(text: Any) -> List[str]:
  """'throw, catch,,throw' -> ['throw', 'catch'] (order kept, no repeats).

  Args:
    text: a comma-separated string, a sequence of names, or None/''.

  Returns:
    Names with surrounding and repeated whitespace removed.
  """
  if not text:
    return []
  items = text.split(",") if isinstance(text, str) else list(text)
  out = []
  for item in items:
    name = _clean(str(item))
    if name and name not in out:
      out.append(name)
  return out


def read_prompts_file(path: str) -> Tuple[List[Tuple[str, str]], List[str]]:
  """Reads a prompts file (module docstring, "Class lists").

  Args:
    path: text file, one class per line.

  Returns:
    ((verb, object) pairs, plain prompts), in file order, without repeats.

  Raises:
    FileNotFoundError: no such file.
    vocabulary_lib.VocabularyError: a "verb,object" line with an empty side
     or more than one
      comma, or no class at all.
  """
  pairs, plain = [], []
  with open(path, encoding="utf-8") as f:
    for lineno, raw in enumerate(f, 1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if "," in line:
        parts = [_clean(p) for p in line.split(",")]
        if len(parts) != 2 or not all(parts):
          raise vocabulary_lib.VocabularyError(
              f"{path}:{lineno}: expected 'verb,object' or a plain prompt, "
              f"got {line!r}")
        if tuple(parts) not in pairs:
          pairs.append(tuple(parts))
      else:
        prompt = _clean(line)
        if prompt not in plain:
          plain.append(prompt)
  if not pairs and not plain:
    raise vocabulary_lib.VocabularyError(
        f"{path}: no prompts (expected one 'verb,object' "
        "or plain prompt per line)")
  return pairs, plain


# ---------------------------------------------------------------- datasets


def build_vocabulary(config, verbs: Sequence[str] = (),
                     objects: Sequence[str] = (),
                     pairs: Sequence[Tuple[str, str]] = (),
                     plain_prompts: Sequence[str] = ()
                     ) -> vocabulary_lib.Vocabulary:
  """An open vocabulary from user verbs, objects, pairs and prompts.

  Args:
    config: the run config (`dataset.name`, `model.interaction_space`,
      `model.prompt_style`).
    verbs: verbs of the cross product (default: all training verbs when only
      `objects` are given).
    objects: objects of the cross product and of the plain prompts (default:
      the training objects).
    pairs: extra single (verb, object) classes.
    plain_prompts: extra verbatim interaction prompts, each paired with every
      object of `objects` (or of the training list).

  Returns:
    The Vocabulary (module docstring). Candidate order: cross product
    (verb-major), then `pairs`, then plain prompts x objects.

  Raises:
    vocabulary_lib.VocabularyError: nothing given, or an unknown interaction
      space.
  """
  space = config.model.interaction_space
  if space not in postprocess.INTERACTION_SPACES:
    raise vocabulary_lib.VocabularyError(
        f"model.interaction_space must be one of "
        f"{postprocess.INTERACTION_SPACES}, got {space!r}")
  verbs, objects = parse_names(verbs), parse_names(objects)
  if not (verbs or objects or pairs or plain_prompts):
    raise vocabulary_lib.VocabularyError(
        "an open vocabulary needs verbs, objects or "
        "prompts")
  dataset = config.dataset.name
  train_objects = vocabulary_lib.training_objects(dataset)
  triples = _candidate_triples(dataset, verbs, objects, pairs, plain_prompts)
  all_objects = list(train_objects)
  for _, o, _ in triples:
    if o not in all_objects:
      all_objects.append(o)
  prompts, verb_names, table = _candidate_table(
      triples, all_objects, space, config.model.prompt_style, dataset)
  return vocabulary_lib.Vocabulary(space, tuple(prompts), tuple(verb_names),
                                   tuple(all_objects), len(train_objects),
                                   table, is_open=True)


def _candidate_triples(dataset: str, verbs: Sequence[str],
                       objects: Sequence[str],
                       pairs: Sequence[Tuple[str, str]],
                       plain_prompts: Sequence[str]
                       ) -> List[Tuple[str, str, str]]:
  """(verb label, object, plain prompt or '') of every candidate, no repeats.

  Known verbs and objects take their training spelling (`_key` matching);
  the order is that of `build_vocabulary`'s candidates.
  """
  train_objects = vocabulary_lib.training_objects(dataset)
  default_objects = [o for o in train_objects if o != "no_object"]
  obj_lookup = {_key(o): o for o in train_objects}
  verb_lookup = ({_key(v): v for v in metadata.hico().verbs}
                 if dataset == "hico_det" else {})

  def canon_obj(name: str) -> str:
    return obj_lookup.get(_key(name), _clean(name))

  def canon_verb(name: str) -> str:
    return verb_lookup.get(_key(name), _clean(name))

  triples: List[Tuple[str, str, str]] = []
  if verbs or objects:
    vs = ([canon_verb(v) for v in verbs]
          or list(vocabulary_lib.training_verbs(dataset)))
    os_ = [canon_obj(o) for o in objects] or default_objects
    triples += [(v, o, "") for v in vs for o in os_]
  triples += [(canon_verb(v), canon_obj(o), "") for v, o in pairs]
  plain_objects = [canon_obj(o) for o in objects] or default_objects
  triples += [(p, o, p) for p in plain_prompts for o in plain_objects]
  return list(dict.fromkeys(triples))


def _candidate_table(triples: Sequence[Tuple[str, str, str]],
                     all_objects: Sequence[str], space: str, style: str,
                     dataset: str
                     ) -> Tuple[List[str], List[str],
                                postprocess.CandidateTable]:
  """(interaction prompts, verb labels, candidate table) of the candidates.

  Args:
    triples: `_candidate_triples`.
    all_objects: the object list (training objects, then new ones).
    space: 'hoi' (a prompt per candidate) | 'verb' (a prompt per verb).
    style: `model.prompt_style`.
    dataset: `dataset.name` (HICO-DET candidates get their HOI index).
  """
  verb_names: List[str] = []
  prompts: List[str] = []
  column_of: Dict[str, int] = {}
  cols, vidx, oidx, hidx = [], [], [], []
  hico = metadata.hico()
  for v, o, plain in triples:
    if plain:
      prompt = plain
    elif space == "hoi":
      prompt = metadata.hoi_prompt(v, o, style)
    else:
      prompt = metadata.verb_prompt(v, style)
    if prompt not in column_of:
      column_of[prompt] = len(prompts)
      prompts.append(prompt)
    if v not in verb_names:
      verb_names.append(v)
    cols.append(column_of[prompt])
    vidx.append(verb_names.index(v))
    oidx.append(all_objects.index(o))
    h = None
    if dataset == "hico_det" and v in hico.verbs and o in hico.objects:
      h = hico.hoi_index(hico.verbs.index(v), hico.objects.index(o))
    hidx.append(-1 if h is None or plain else h)
  table = postprocess.CandidateTable(
      interaction_column=np.asarray(cols, np.int32),
      object_index=np.asarray(oidx, np.int32),
      verb_index=np.asarray(vidx, np.int32),
      hoi_index=np.asarray(hidx, np.int32),
      num_columns=len(prompts))
  return prompts, verb_names, table


def vocabulary_from_args(config, verbs: Any = "", objects: Any = "",
                         prompts_file: str = "") -> vocabulary_lib.Vocabulary:
  """Evaluation vocabulary when nothing is given, else `build_vocabulary`.

  Args:
    config: the run config.
    verbs: comma-separated verbs (or a list).
    objects: comma-separated objects (or a list).
    prompts_file: optional prompts file (`read_prompts_file`).

  Returns:
    The Vocabulary to predict with.
  """
  pairs, plain = read_prompts_file(prompts_file) if prompts_file else ([], [])
  verbs, objects = parse_names(verbs), parse_names(objects)
  if not (verbs or objects or pairs or plain):
    return vocabulary_lib.evaluation_vocabulary(config)
  return build_vocabulary(config, verbs, objects, pairs, plain)


# ------------------------------------------------------------ CLIP and params


def object_classifier_params(params: Mapping[str, Any]) -> Dict[str, Any]:
  """{'kernel': [E, K+1], 'bias': [K+1]} of the object classifier."""
  node = params
  for part in _OBJ_PATH:
    if part not in node:
      raise KeyError(f"params have no {'/'.join(_OBJ_PATH)} (got "
                     f"{sorted(node)} at {part!r})")
    node = node[part]
  return dict(node)


def extend_object_classifier(params: Mapping[str, Any],
                             new_embeddings: np.ndarray) -> Dict[str, Any]:
  """Adds object classes to the trained object classifier.

  Column j < K and the no-object column (last) are kept; new column K + i is
  `normalize(new_embeddings[i]) * mean_j ||kernel[:, j]||` with bias
  `mean_j bias[j]` (j over the K trained classes), matching the CLIP
  initialisation of the trained columns (module docstring).

  Args:
    params: the model's `params` collection.
    new_embeddings: [n, E] CLIP text embeddings of the new object prompts.

  Returns:
    A new params dict (other leaves shared) whose object classifier has
    K + n + 1 outputs; build the model with `num_object_classes=K + n`.
  """
  new = np.asarray(new_embeddings, np.float32)
  leaf = object_classifier_params(params)
  kernel = np.asarray(leaf["kernel"], np.float32)
  bias = np.asarray(leaf["bias"], np.float32)
  if new.ndim != 2 or new.shape[1] != kernel.shape[0]:
    raise vocabulary_lib.VocabularyError(f"new object embeddings must be [n, "
                          f"{kernel.shape[0]}], got {new.shape}")
  if not new.shape[0]:
    return flax.core.unfreeze(params)
  k = kernel.shape[1] - 1
  scale = float(np.mean(np.linalg.norm(kernel[:, :k], axis=0)))
  new = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-6)
  kernel = np.concatenate([kernel[:, :k], new.T * scale, kernel[:, k:]], 1)
  bias = np.concatenate([bias[:k], np.full(new.shape[0], bias[:k].mean(),
                                           np.float32), bias[k:]])
  out = flax.core.unfreeze(params)
  node = out
  for part in _OBJ_PATH[:-1]:
    node[part] = dict(node[part])
    node = node[part]
  node[_OBJ_PATH[-1]] = dict(node[_OBJ_PATH[-1]], kernel=kernel, bias=bias)
  return out


@dataclasses.dataclass
class PreparedClasses:
  """Inputs of a model that scores a Vocabulary.

  Attributes:
    vocabulary: the class list.
    interaction_embeddings: [C, E] text embeddings (model call argument).
    verb_query_embeddings: [C_q, E] text embeddings of the verb decoder's
      class queries (`vocabulary.verb_query_prompts`: the training classes'
      by default, whatever the scored vocabulary).
    params: model params, with the object classifier extended when the
      vocabulary has new objects.
    num_object_classes: K of the model to build (training K + new objects).
  """
  vocabulary: vocabulary_lib.Vocabulary
  interaction_embeddings: np.ndarray
  verb_query_embeddings: np.ndarray
  params: Dict[str, Any]
  num_object_classes: int


def prepare_classes(vocabulary: vocabulary_lib.Vocabulary,
                    params: Mapping[str, Any],
                    clip_params: Mapping[str, Any], config) -> PreparedClasses:
  """Text embeddings of a vocabulary and the matching model params.

  Args:
    vocabulary: the classes to score.
    params: the trained model's `params`.
    clip_params: CLIP text params (`clip_text_params`).
    config: the run config.

  Returns:
    PreparedClasses.

  Raises:
    VocabularyError: the object classifier does not match the vocabulary,
      or a linear interaction head (`model.classifier='linear'`) is asked
      for classes other than its training classes.
  """
  if config.model.classifier == "linear":
    head = params["verb_predictor"]["interaction_classifier"]["kernel"]
    if vocabulary.is_open or vocabulary.num_classes != head.shape[-1]:
      raise vocabulary_lib.VocabularyError(
          f"model.classifier='linear' has a learned head over its "
          f"{head.shape[-1]} training classes and cannot score "
          f"{'an open' if vocabulary.is_open else 'this'} vocabulary of "
          f"{vocabulary.num_classes} classes; use the evaluation vocabulary "
          "or a model.classifier='clip_text' model")
  inter = clip_text.class_embeddings(clip_params, config, vocabulary.prompts)
  queries = vocabulary_lib.verb_query_embeddings(
      config, vocabulary.prompts, inter,
      lambda q: clip_text.class_embeddings(clip_params, config, q))
  num_trained = object_classifier_params(params)["kernel"].shape[1] - 1
  if num_trained != vocabulary.num_training_objects:
    raise vocabulary_lib.VocabularyError(
        f"the checkpoint's object classifier has {num_trained} classes, the "
        f"{config.dataset.name} vocabulary {vocabulary.num_training_objects}")
  new_params = flax.core.unfreeze(params)
  if vocabulary.new_objects:
    new_params = extend_object_classifier(
        params, clip_text.class_embeddings(clip_params, config,
                                vocabulary.new_object_prompts()))
  return PreparedClasses(vocabulary, inter, queries, new_params,
                         len(vocabulary.objects))
