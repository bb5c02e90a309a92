"""The tables of an evaluation, as pandas DataFrames.

Every table is a `pandas.DataFrame` with its caption in `frame.attrs['title']`
(the notebooks print it above the table). Values are the raw numbers: AP and
recall in percent (float64), counts int64; a value that does not exist (no
class in a subset, an empty group) is NaN.

  map_tables           mAP per setting (index: the rows, columns: subsets)
  summary_table        seen / unseen / full class statistics
  transfer_ranking     the unseen classes that transfer best and worst
  unseen_ap_by         unseen-class AP grouped by verb or object

`seen_unseen_summary` gives the per-class values behind `summary_table` (and
the seen/unseen plot) as `GroupStats`.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ki2hoi_jax.analysis import hoi_metrics
from ki2hoi_jax.data import metadata

_SUBSET_COLUMNS = {"full": "Full", "rare": "Rare", "non_rare": "Non-rare",
                   "seen": "Seen", "unseen": "Unseen"}
_MAP_ROWS = ("mAP (%)", "mean max recall (%)", "classes")


def frame_from_rows(title: str, columns: Sequence[Tuple[str, Any]],
                    rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
  """A DataFrame of row tuples with typed columns and a title.

  Args:
    title: caption, stored in `attrs['title']`.
    columns: (name, dtype) of each column, e.g. ('AP', np.float64); None in
      a float column becomes NaN.
    rows: one tuple of values per row (same length as `columns`).

  Returns:
    The DataFrame (default RangeIndex); typed even without rows.
  """
  values = list(zip(*rows)) if rows else [()] * len(columns)
  frame = pd.DataFrame({name: pd.Series(column, dtype=dtype)
                        for (name, dtype), column in zip(columns, values)})
  frame.attrs["title"] = title
  return frame


def map_tables(metrics: Mapping[str, Any],
               rare_hois: Optional[Sequence[int]] = None
               ) -> Dict[str, pd.DataFrame]:
  """mAP tables of the default, known-object and (if any) zero-shot settings.

  Each table is a [3, 3] float64 DataFrame. Its columns are the subsets of its
  setting ('Full', 'Rare', 'Non-rare', or 'Full', 'Seen', 'Unseen'); its index
  holds the rows 'mAP (%)' (the evaluator's means), 'mean max recall (%)' and
  'classes' (with test GT, a count stored as float), the last two computed
  from the per-HOI values. NaN: no class in the subset. `attrs['title']`:
  'Default setting', 'Known-object setting', 'Zero-shot setting (<split>)'.

  Args:
    metrics: `hico.evaluate` output.
    rare_hois: the rare set the metrics used; None = metadata (138).

  Returns:
    {'default': DataFrame, 'known_object': DataFrame[, 'zero_shot':
    DataFrame]}.
  """
  n = len(metrics["per_hoi"]["num_gt"])
  has_gt = hoi_metrics.has_gt(metrics)
  rare = hoi_metrics.hoi_mask(
      metadata.hico().rare_hois if rare_hois is None else rare_hois, n)

  def table(title, means, columns, subsets, recall_key):
    recall = hoi_metrics.per_hoi(metrics, recall_key)
    masks = [has_gt & s for s in subsets]
    rows = ([means[c] for c in columns],
            [hoi_metrics.subset_mean(recall, m) for m in masks],
            [int(m.sum()) for m in masks])
    frame = pd.DataFrame(list(rows), index=list(_MAP_ROWS),
                         columns=[_SUBSET_COLUMNS[c] for c in columns],
                         dtype=np.float64)
    frame.attrs["title"] = title
    return frame

  everything = np.ones(n, bool)
  out = {
      "default": table("Default setting", metrics["default"],
                       ("full", "rare", "non_rare"),
                       (everything, rare, ~rare), "max_recall"),
      "known_object": table("Known-object setting", metrics["known_object"],
                            ("full", "rare", "non_rare"),
                            (everything, rare, ~rare),
                            "max_recall_known_object"),
  }
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    unseen = hoi_metrics.unseen_mask(z["split"], n)
    out["zero_shot"] = table(f"Zero-shot setting ({z['split']})", z,
                             ("full", "seen", "unseen"),
                             (everything, ~unseen, unseen), "max_recall")
  return out


@dataclasses.dataclass(frozen=True)
class GroupStats:
  """AP statistics of a group of HOI classes (those with test GT).

  Attributes:
    name: 'full', 'seen' or 'unseen'.
    hoi: [M] HOI indices.
    ap: [M] AP (%).
    max_recall: [M] maximum recall (%).
  """
  name: str
  hoi: np.ndarray
  ap: np.ndarray
  max_recall: np.ndarray

  @property
  def num_classes(self) -> int:
    return int(self.hoi.size)

  @property
  def mean_ap(self) -> Optional[float]:
    return float(np.mean(self.ap)) if self.ap.size else None

  @property
  def median_ap(self) -> Optional[float]:
    return float(np.median(self.ap)) if self.ap.size else None

  @property
  def mean_max_recall(self) -> Optional[float]:
    return float(np.mean(self.max_recall)) if self.ap.size else None

  @property
  def num_nonzero(self) -> int:
    """Classes with AP > 0 (at least one true positive)."""
    return int(np.count_nonzero(self.ap > 0))


def seen_unseen_summary(metrics: Mapping[str, Any],
                        split: Optional[str] = None) -> Dict[str, GroupStats]:
  """Per-class AP of the full / seen / unseen classes with test GT.

  The means equal the evaluator's zero-shot Full / Seen / Unseen mAPs (without
  `compat_averaging_bug`).

  Args:
    metrics: `hico.evaluate` output.
    split: zero-shot split; None = the metrics' split.

  Returns:
    {'full': GroupStats, 'seen': ..., 'unseen': ...}.
  """
  split = hoi_metrics.require_split(metrics, split)
  n = len(metrics["per_hoi"]["num_gt"])
  has_gt = hoi_metrics.has_gt(metrics)
  unseen = hoi_metrics.unseen_mask(split, n)
  ap = hoi_metrics.per_hoi(metrics, "ap")
  rec = hoi_metrics.per_hoi(metrics, "max_recall")
  out = {}
  for name, mask in (("full", has_gt), ("seen", has_gt & ~unseen),
                     ("unseen", has_gt & unseen)):
    idx = np.flatnonzero(mask)
    out[name] = GroupStats(name, idx, ap[idx], rec[idx])
  return out


_SUMMARY_COLUMNS = (("classes", "str"), ("count", np.int64),
                    ("mAP", np.float64), ("median AP", np.float64),
                    ("mean max recall", np.float64), ("AP > 0", np.int64))


def summary_table(summary: Mapping[str, GroupStats],
                  title: str = "") -> pd.DataFrame:
  """`seen_unseen_summary` as a DataFrame, one row per group.

  Columns: 'classes' (group name, str), 'count' (classes, int64), 'mAP',
  'median AP', 'mean max recall' (float64, %; NaN for an empty group) and
  'AP > 0' (classes with AP > 0, int64). `attrs['title']`: `title` or
  'Seen vs unseen classes (AP %)'.
  """
  rows = tuple((g.name, g.num_classes, g.mean_ap, g.median_ap,
                g.mean_max_recall, g.num_nonzero)
               for g in summary.values())
  return frame_from_rows(title or "Seen vs unseen classes (AP %)",
                         _SUMMARY_COLUMNS, rows)


_RANKING_COLUMNS = (("rank", np.int64), ("HOI", np.int64), ("verb", "str"),
                    ("object", "str"), ("AP", np.float64),
                    ("max recall", np.float64), ("test pairs", np.int64),
                    ("predictions", np.int64))


def transfer_ranking(metrics: Mapping[str, Any], split: Optional[str] = None,
                     k: int = 10) -> Dict[str, pd.DataFrame]:
  """The unseen classes that transfer best and worst.

  Only unseen classes with test GT are ranked. 'best': AP descending, then
  max recall descending, then HOI index; 'worst': AP ascending, then max
  recall ascending, then HOI index.

  Args:
    metrics: `hico.evaluate` output.
    split: zero-shot split; None = the metrics' split.
    k: rows per table (fewer when there are fewer unseen classes).

  Returns:
    {'best': DataFrame, 'worst': DataFrame}, each [min(k, unseen classes),
    8] with the columns 'rank' (from 1), 'HOI' (index), 'verb', 'object',
    'AP', 'max recall' (%), 'test pairs', 'predictions'; `attrs['title']`
    'Unseen classes (<split>) that transfer best' (or worst).
  """
  split = hoi_metrics.require_split(metrics, split)
  meta = metadata.hico()
  group = seen_unseen_summary(metrics, split)["unseen"]
  num_gt = np.asarray(metrics["per_hoi"]["num_gt"], np.int64)
  num_pred = np.asarray(metrics["per_hoi"]["num_predictions"], np.int64)
  best = np.lexsort((group.hoi, -group.max_recall, -group.ap))
  worst = np.lexsort((group.hoi, group.max_recall, group.ap))

  def table(order, title):
    rows = []
    for rank, i in enumerate(order[:k], 1):
      h = int(group.hoi[i])
      v, o = meta.hois[h]
      rows.append((rank, h, meta.verbs[v], meta.objects[o],
                   float(group.ap[i]), float(group.max_recall[i]),
                   int(num_gt[h]), int(num_pred[h])))
    return frame_from_rows(title, _RANKING_COLUMNS, rows)

  return {"best": table(best, f"Unseen classes ({split}) that transfer best"),
          "worst": table(worst,
                         f"Unseen classes ({split}) that transfer worst")}


def unseen_ap_by(metrics: Mapping[str, Any], by: str = "verb",
                 split: Optional[str] = None) -> pd.DataFrame:
  """Mean AP of the unseen classes grouped by verb or object.

  Rows sorted by mean AP descending (ties: name). Useful for UV (unseen
  verbs) and UO (unseen objects).

  Args:
    metrics: `hico.evaluate` output.
    by: 'verb' or 'object'.
    split: zero-shot split; None = the metrics' split.

  Returns:
    DataFrame, one row per verb (or object) of the unseen classes with test
    GT, with the columns `by` (the name, str), 'classes' (int64), 'mAP' and
    'mean max recall' (float64, %); `attrs['title']` 'Unseen classes
    (<split>) by <by>'.
  """
  if by not in ("verb", "object"):
    raise ValueError(f"by must be 'verb' or 'object', got {by!r}")
  split = hoi_metrics.require_split(metrics, split)
  meta = metadata.hico()
  group = seen_unseen_summary(metrics, split)["unseen"]
  keys = (meta.hoi_verb if by == "verb" else meta.hoi_object)[group.hoi]
  names = meta.verbs if by == "verb" else meta.objects
  rows = []
  for key in np.unique(keys):
    m = keys == key
    rows.append((names[key], int(m.sum()), float(np.mean(group.ap[m])),
                 float(np.mean(group.max_recall[m]))))
  rows.sort(key=lambda r: (-r[2], r[0]))
  return frame_from_rows(f"Unseen classes ({split}) by {by}",
                         ((by, "str"), ("classes", np.int64),
                          ("mAP", np.float64),
                          ("mean max recall", np.float64)), rows)
