"""Class lists and zero-shot splits of HICO-DET and V-COCO.

The JSON files next to this module are package data copied from the project's
shared metadata (GEN-VLKT/HOICLIP conventions, see docs/datasets.md section 1). Every index
here is 0-based:

* verb index v in [0, 117): verb id in annotation files is v + 1.
* object index o in [0, 80): COCO category id is `coco_category_ids[o]`.
* HOI index h in [0, 600): HOI id in annotation files is h + 1, and
  `hois[h] == (verb_index, object_index)`.
"""

import dataclasses
import functools
import importlib.resources
import json
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ZERO_SHOT_SPLITS = ("rf_uc", "nf_uc", "uc", "uo", "uv")
# `uc` (unseen combination) is HOICLIP's uc0; the other four are GEN-VLKT's.
_SPLIT_KEYS = {"rf_uc": "rf_uc", "nf_uc": "nf_uc", "uc": "uc0", "uo": "uo",
               "uv": "uv", "uc0": "uc0", "uc1": "uc1", "uc2": "uc2",
               "uc3": "uc3", "uc4": "uc4"}
NO_INTERACTION_VERB = 57
# `config.model.prompt_style`: how interaction prompts say the verb.
PROMPT_STYLES = ("gerund", "bare")


def _load_json(name: str) -> dict:
  text = importlib.resources.files(__package__).joinpath(name).read_text()
  return json.loads(text)


def _article(word: str) -> str:
  return "an" if word[0].lower() in "aeiou" else "a"


def readable(name: str) -> str:
  """'dining_table' -> 'dining table'."""
  return name.replace("_", " ")


def object_prompt(object_name: str) -> str:
  """CLIP prompt of an object class, e.g. 'a photo of an apple'."""
  obj = readable(object_name)
  return f"a photo of {_article(obj)} {obj}"


# Gerunds that the spelling rules of `_gerund_word` get wrong. The rules
# double a final consonant only in one-syllable words; the longer words here
# stress their last syllable and double it too, and the rules read the 'u' of
# quit and squat as a vowel. Of the HICO-DET and V-COCO verbs only 'control'
# is here; the others keep open-vocabulary verbs
# (`inference/open_vocabulary.py`) right.
GERUND_EXCEPTIONS = {
    "begin": "beginning",
    "control": "controlling",
    "equip": "equipping",
    "forget": "forgetting",
    "patrol": "patrolling",
    "permit": "permitting",
    "prefer": "preferring",
    "quit": "quitting",
    "refer": "referring",
    "regret": "regretting",
    "squat": "squatting",
    "unwrap": "unwrapping",
    "unzip": "unzipping",
}


def _doubles_final_consonant(word: str) -> bool:
  """True for one-syllable words ending consonant-vowel-consonant (run, stir).

  A final w, x or y is never doubled (row, fix, pay).
  """
  one_syllable = len(re.findall(r"[aeiou]+", word)) == 1
  return one_syllable and re.search(r"[^aeiou][aeiou][^aeiouwxy]$",
                                    word) is not None


def _gerund_word(word: str) -> str:
  """'ride' -> 'riding', 'run' -> 'running', 'lie' -> 'lying'."""
  if word in GERUND_EXCEPTIONS:
    return GERUND_EXCEPTIONS[word]
  if word.endswith("ie"):  # lie, tie
    return word[:-2] + "ying"
  if word.endswith("e") and len(word) > 2 and word[-2] not in "eoy":
    return word[:-1] + "ing"  # ride, hose, dribble; not free, hoe, dye
  if _doubles_final_consonant(word):
    return word + word[-1] + "ing"  # run, pet, stir, stop
  return word + "ing"  # open, ski, dry, lasso, kick


def gerund(verb_name: str) -> str:
  """The gerund phrase of a verb: 'sit_on' -> 'sitting on', 'tie' -> 'tying'.

  The first word of a multi-word verb takes the '-ing' ('hop_on' -> 'hopping
  on', 'pick_up' -> 'picking up'); the spelling rules are in `_gerund_word`,
  the words they get wrong in `GERUND_EXCEPTIONS`.

  Args:
    verb_name: a verb class name such as 'ride' or 'text_on' (not
      'no_interaction', whose prompts have their own form).
  """
  if verb_name == "no_interaction":
    raise ValueError("'no_interaction' has no gerund; hoi_prompt and "
                     "verb_prompt give it its own form")
  first, *rest = readable(verb_name).split(" ")
  return " ".join([_gerund_word(first)] + rest)


def check_prompt_style(style: str) -> None:
  """Raises ValueError unless `style` is one of PROMPT_STYLES."""
  if style not in PROMPT_STYLES:
    raise ValueError(f"unknown prompt style {style!r}; expected one of "
                     f"{PROMPT_STYLES}")


def verb_phrase(verb_name: str, style: str = "gerund") -> str:
  """The verb as a prompt says it: 'riding' ('gerund') or 'ride' ('bare')."""
  check_prompt_style(style)
  return gerund(verb_name) if style == "gerund" else readable(verb_name)


def hoi_prompt(verb_name: str, object_name: str, style: str = "gerund"
               ) -> str:
  """CLIP prompt of an HOI, e.g. 'a photo of a person riding a bicycle'.

  `no_interaction` becomes 'a photo of a person and a/an [object]' in both
  styles (GEN-VLKT's and HOICLIP's form).

  Args:
    verb_name: verb class name ('ride', 'sit_on', 'no_interaction').
    object_name: object class name ('bicycle', 'dining_table').
    style: 'gerund' ('a person riding a bicycle', GEN-VLKT/HOICLIP) or
      'bare' ('a person ride a bicycle'); `config.model.prompt_style`.
  """
  obj = readable(object_name)
  if verb_name == "no_interaction":
    check_prompt_style(style)
    return f"a photo of a person and {_article(obj)} {obj}"
  return (f"a photo of a person {verb_phrase(verb_name, style)} "
          f"{_article(obj)} {obj}")


def verb_prompt(verb_name: str, style: str = "gerund") -> str:
  """CLIP prompt of a verb alone (verb interaction space).

  'a photo of a person riding something' ('gerund') or 'a photo of a person
  ride something' ('bare'). `no_interaction` becomes 'a photo of a person and
  something' ('gerund': the HOI form with 'something' for the object, as every
  other verb prompt) or 'a photo of a person with no interaction' ('bare').

  Args:
    verb_name: verb class name.
    style: 'gerund' | 'bare' (`config.model.prompt_style`).
  """
  if verb_name == "no_interaction":
    check_prompt_style(style)
    if style == "bare":
      return "a photo of a person with no interaction"
    return "a photo of a person and something"
  return f"a photo of a person {verb_phrase(verb_name, style)} something"


@dataclasses.dataclass(frozen=True)
class HicoMeta:
  """HICO-DET class spaces.

  Attributes:
    verbs: 117 verb names in official order.
    objects: 80 object names in COCO category-id order.
    coco_category_ids: COCO id of each object index.
    hois: 600 (verb_index, object_index) pairs in official HOI order.
    rare_hois: sorted indices of the 138 rare HOIs.
    zero_shot: split name -> sorted unseen HOI indices.
    unseen_objects: split name -> unseen object indices (only 'uo').
    unseen_verbs: split name -> unseen verb indices (only 'uv').
  """
  verbs: Tuple[str, ...]
  objects: Tuple[str, ...]
  coco_category_ids: Tuple[int, ...]
  hois: Tuple[Tuple[int, int], ...]
  rare_hois: Tuple[int, ...]
  zero_shot: Dict[str, Tuple[int, ...]]
  unseen_objects: Dict[str, Tuple[int, ...]]
  unseen_verbs: Dict[str, Tuple[int, ...]]

  @property
  def num_verbs(self) -> int:
    return len(self.verbs)

  @property
  def num_objects(self) -> int:
    return len(self.objects)

  @property
  def num_hois(self) -> int:
    return len(self.hois)

  @functools.cached_property
  def _hoi_lookup(self) -> Dict[Tuple[int, int], int]:
    return {pair: i for i, pair in enumerate(self.hois)}

  @functools.cached_property
  def _coco_to_index(self) -> Dict[int, int]:
    return {c: i for i, c in enumerate(self.coco_category_ids)}

  def hoi_index(self, verb_index: int, object_index: int) -> Optional[int]:
    """HOI index of (verb, object), or None if the combination is invalid."""
    return self._hoi_lookup.get((int(verb_index), int(object_index)))

  def object_index_from_coco(self, coco_id: int) -> Optional[int]:
    """Object index of a COCO category id, or None for unknown ids."""
    return self._coco_to_index.get(int(coco_id))

  @property
  def hoi_verb(self) -> np.ndarray:
    """[600] verb index of each HOI."""
    return np.array([v for v, _ in self.hois], np.int32)

  @property
  def hoi_object(self) -> np.ndarray:
    """[600] object index of each HOI."""
    return np.array([o for _, o in self.hois], np.int32)

  def verb_object_matrix(self) -> np.ndarray:
    """[117, 80] float32, 1 where (verb, object) is a valid HOI (corre_hico)."""
    m = np.zeros((self.num_verbs, self.num_objects), np.float32)
    for v, o in self.hois:
      m[v, o] = 1.0
    return m

  def unseen_hois(self, split: Optional[str]) -> Tuple[int, ...]:
    """Unseen HOI indices of a zero-shot split; () for None/'' (supervised)."""
    if not split:
      return ()
    if split not in _SPLIT_KEYS:
      raise ValueError(f"unknown zero-shot split {split!r}; expected one of "
                       f"{sorted(_SPLIT_KEYS)} or '' for fully supervised")
    return self.zero_shot[_SPLIT_KEYS[split]]

  def seen_hois(self, split: Optional[str]) -> Tuple[int, ...]:
    unseen = set(self.unseen_hois(split))
    return tuple(i for i in range(self.num_hois) if i not in unseen)

  def is_rare(self) -> np.ndarray:
    """[600] bool mask of the standard rare set."""
    mask = np.zeros(self.num_hois, bool)
    mask[list(self.rare_hois)] = True
    return mask

  def hoi_name(self, hoi_index: int) -> str:
    v, o = self.hois[hoi_index]
    return f"{self.verbs[v]} {self.objects[o]}"

  def hoi_prompts(self, style: str = "gerund") -> List[str]:
    """600 prompts 'a photo of a person [verb] a/an [object]' (`hoi_prompt`)."""
    return [hoi_prompt(self.verbs[v], self.objects[o], style)
            for v, o in self.hois]

  def object_prompts(self) -> List[str]:
    """80 prompts 'a photo of a/an [object]'."""
    return [object_prompt(o) for o in self.objects]

  def verb_prompts(self, style: str = "gerund") -> List[str]:
    """117 verb-only prompts (verb interaction space, `verb_prompt`)."""
    return [verb_prompt(v, style) for v in self.verbs]


# V-COCO actions whose gerund needs a preposition before 'something'.
_VCOCO_GERUND_PREPOSITIONS = {"look": "at"}


@dataclasses.dataclass(frozen=True)
class VcocoMeta:
  """V-COCO class spaces (29 verb classes, 81 objects incl. 'no_object').

  Attributes:
    actions: 26 action names in official order.
    action_roles: roles of each action (empty for agent-only actions).
    verb_classes: 29 training verb-class names ('<action>_<role>' or action).
    verb_class_action: action index of each verb class.
    verb_class_role: role of each verb class ('' for agent-only).
    role_ap_classes: the 24 verb classes averaged for the reported role AP.
    objects: 81 object names, index 80 = 'no_object'.
    coco_category_ids: COCO id of objects 0..79.
    hoi_pairs: 263 (verb_class, object) pairs of the HOI classifier.
  """
  actions: Tuple[str, ...]
  action_roles: Tuple[Tuple[str, ...], ...]
  verb_classes: Tuple[str, ...]
  verb_class_action: Tuple[int, ...]
  verb_class_role: Tuple[str, ...]
  role_ap_classes: Tuple[int, ...]
  objects: Tuple[str, ...]
  coco_category_ids: Tuple[int, ...]
  hoi_pairs: Tuple[Tuple[int, int], ...]
  no_object_index: int = 80

  @property
  def num_verb_classes(self) -> int:
    return len(self.verb_classes)

  @property
  def agent_only_actions(self) -> Tuple[int, ...]:
    return tuple(i for i, r in enumerate(self.action_roles) if not r)

  def verb_object_matrix(self) -> np.ndarray:
    """[29, 81] float32 prior, 1 where (verb class, object) occurs."""
    m = np.zeros((self.num_verb_classes, len(self.objects)), np.float32)
    for v, o in self.hoi_pairs:
      m[v, o] = 1.0
    return m

  def verb_prompts(self, style: str = "gerund") -> List[str]:
    """29 verb-class prompts.

    'a photo of a person holding something' (role 'obj'), '... riding with
    something' (role 'instr'), '... standing' (agent only); 'bare' says the
    verb as named ('hold', 'ride', 'stand'). In the 'gerund' style 'look'
    reads 'looking at' (GEN-VLKT's V-COCO prompts).

    Args:
      style: 'gerund' | 'bare' (`config.model.prompt_style`).
    """
    out = []
    for name, role in zip(self.verb_classes, self.verb_class_role):
      action = name[: -len(role) - 1] if role else name
      text = verb_phrase(action, style)
      if style == "gerund" and action in _VCOCO_GERUND_PREPOSITIONS:
        text += " " + _VCOCO_GERUND_PREPOSITIONS[action]
      if role == "instr":
        out.append(f"a photo of a person {text} with something")
      else:
        out.append(f"a photo of a person {text}" + (" something" if role else ""))
    return out


@functools.lru_cache(maxsize=None)
def hico() -> HicoMeta:
  """The HICO-DET metadata (cached)."""
  d = _load_json("hico_meta.json")
  zs = d["zero_shot"]
  splits = {k: tuple(v) for k, v in zs.items()
            if k in ("rf_uc", "nf_uc", "uo", "uv") or k.startswith("uc")}
  return HicoMeta(
      verbs=tuple(d["verbs"]),
      objects=tuple(d["objects"]),
      coco_category_ids=tuple(d["coco_category_ids"]),
      hois=tuple((int(v), int(o)) for v, o in d["hois"]),
      rare_hois=tuple(d["rare_hois"]),
      zero_shot=splits,
      unseen_objects={"uo": tuple(zs["uo_objects"])},
      unseen_verbs={"uv": tuple(zs["uv_verbs"])},
  )


@functools.lru_cache(maxsize=None)
def vcoco() -> VcocoMeta:
  """The V-COCO metadata (cached)."""
  d = _load_json("vcoco_meta.json")
  info = d["verb_class_info"]
  return VcocoMeta(
      actions=tuple(a["name"] for a in d["actions"]),
      action_roles=tuple(tuple(a["roles"]) for a in d["actions"]),
      verb_classes=tuple(d["verb_classes"]),
      verb_class_action=tuple(int(c["action_index"]) for c in info),
      verb_class_role=tuple(c["role"] or "" for c in info),
      role_ap_classes=tuple(d["role_ap_classes"]),
      objects=tuple(d["objects"]),
      coco_category_ids=tuple(d["coco_category_ids"]),
      hoi_pairs=tuple((int(v), int(o)) for v, o in d["hoi_pairs"]),
      no_object_index=int(d["no_object_index"]),
  )


def interaction_class_names(space: str, dataset: str = "hico_det") -> List[str]:
  """Names of the interaction classes of an interaction space."""
  if dataset == "vcoco":
    return list(vcoco().verb_classes)
  meta = hico()
  if space == "hoi":
    return [meta.hoi_name(i) for i in range(meta.num_hois)]
  if space == "verb":
    return list(meta.verbs)
  raise ValueError(f"model.interaction_space must be 'hoi' or 'verb', got {space!r}")


def indices_to_mask(indices: Sequence[int], size: int) -> np.ndarray:
  mask = np.zeros(size, bool)
  mask[list(indices)] = True
  return mask
