"""Split annotations and the selection of training examples (numpy only).

Owns `SplitData` (the annotations of one split of a TFDS build, read from
the builder metadata and cached), its evaluation views (`image_info`,
`split_records`), `class_counts` and the training selection.

Training examples are selected in numpy from that metadata
(`select_training`): `dataset.train_fraction` keeps a fixed random subset
of the training images (seeded by `config.seed`), then zero-shot filtering
(docs/datasets.md section 3): every (subject, object) pair with at least one label in
the split's unseen HOIs loses all its labels, and images left without
labels are dropped. The test split is never filtered.
"""

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import tfds_builder


# --------------------------------------------------------------- split data


@dataclasses.dataclass(frozen=True)
class SplitData:
  """Annotations of one split of a TFDS build (position i = i-th example).

  Attributes:
    image_index: [N] record index in the annotation file.
    file_names: N image file names.
    sizes: [N, 2] int32 original (height, width).
    box_start: [N + 1] offsets of each image's boxes in `boxes`.
    boxes: [T, 4] float32 absolute xyxy.
    labels: [T] int32 object indices.
    pair_start: [N + 1] offsets of each image's pairs in `pairs`.
    pairs: [U, 4] int32 (subject, object, verb, hoi).
  """
  image_index: np.ndarray
  file_names: Tuple[str, ...]
  sizes: np.ndarray
  box_start: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  pair_start: np.ndarray
  pairs: np.ndarray

  def __len__(self) -> int:
    return len(self.image_index)

  def boxes_of(self, i: int) -> np.ndarray:
    return self.boxes[self.box_start[i]:self.box_start[i + 1]]

  def labels_of(self, i: int) -> np.ndarray:
    return self.labels[self.box_start[i]:self.box_start[i + 1]]

  def pairs_of(self, i: int) -> np.ndarray:
    return self.pairs[self.pair_start[i]:self.pair_start[i + 1]]

  def record(self, i: int) -> annotations.ImageRecord:
    h, w = self.sizes[i]
    return annotations.ImageRecord(
        index=int(self.image_index[i]), file_name=self.file_names[i],
        boxes=self.boxes_of(i).copy(), labels=self.labels_of(i).copy(),
        pairs=self.pairs_of(i).copy(), height=int(h), width=int(w))


def _offsets(counts: Sequence[int]) -> np.ndarray:
  return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))])


_SPLIT_CACHE: Dict[Tuple[str, str], SplitData] = {}


def _split_data_from_builder(builder, split: str) -> SplitData:
  meta = builder.info.metadata
  if meta.get("format_version") != tfds_builder.FORMAT_VERSION:
    raise ValueError(f"{builder.data_path}: metadata format "
                     f"{meta.get('format_version')} != "
                     f"{tfds_builder.FORMAT_VERSION}; rebuild the dataset")
  c = meta["splits"][split]
  return SplitData(
      image_index=np.asarray(c["image_index"], np.int32),
      file_names=tuple(c["file_name"]),
      sizes=np.asarray(c["size"], np.int32).reshape(-1, 2),
      box_start=_offsets(c["num_boxes"]),
      boxes=np.asarray(c["boxes"], np.float32).reshape(-1, 4),
      labels=np.asarray(c["labels"], np.int32),
      pair_start=_offsets(c["num_pairs"]),
      pairs=np.asarray(c["pairs"], np.int32).reshape(-1, 4))


def split_data(builder, split: str) -> SplitData:
  """The `SplitData` of a prepared builder (cached per data path and split)."""
  key = (os.fspath(builder.data_path), split)
  if key not in _SPLIT_CACHE:
    _SPLIT_CACHE[key] = _split_data_from_builder(builder, split)
  return _SPLIT_CACHE[key]


def image_info(builder, split: str = "test"
               ) -> Dict[int, Tuple[str, Tuple[int, int]]]:
  """image_index -> (file_name, (orig_height, orig_width)) for evaluation."""
  data = split_data(builder, split)
  return {int(i): (f, (int(s[0]), int(s[1])))
          for i, f, s in zip(data.image_index, data.file_names, data.sizes)}


def split_records(builder, split: str = "test"
                  ) -> List[annotations.ImageRecord]:
  """The validated records of a split (boxes, labels, pairs, sizes)."""
  data = split_data(builder, split)
  return [data.record(i) for i in range(len(data))]


def class_counts(dataset: str) -> Tuple[int, int, int]:
  """(num verb classes V, num HOI classes, num object classes K)."""
  if dataset == "vcoco":
    m = metadata.vcoco()
    return m.num_verb_classes, len(m.hoi_pairs), len(m.objects)
  m = metadata.hico()
  return m.num_verbs, m.num_hois, m.num_objects


# ----------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True)
class TrainSelection:
  """Training images and pair labels after fraction and zero-shot filtering.

  Attributes:
    positions: [K] sorted positions (in the split) of the kept images.
    pair_keep: [U] bool over `SplitData.pairs`: label kept.
    stats: counters for the log.
  """
  positions: np.ndarray
  pair_keep: np.ndarray
  stats: Dict[str, int]


def select_training(data: SplitData, dataset: str, zero_shot_split: str = "",
                    train_fraction: float = 1.0, seed: int = 0
                    ) -> TrainSelection:
  """Applies `train_fraction` and zero-shot filtering (docs/datasets.md section 3).

  Args:
    data: the training split.
    dataset: 'hico_det' | 'vcoco'.
    zero_shot_split: '' or one of metadata.ZERO_SHOT_SPLITS (HICO-DET only).
    train_fraction: fraction of training images kept, in (0, 1].
    seed: seed of the fraction's random subset.

  Returns:
    The selection.
  """
  n = len(data)
  if not 0 < train_fraction <= 1:
    raise ValueError(f"dataset.train_fraction must be in (0, 1], got "
                     f"{train_fraction}")
  if zero_shot_split and dataset != "hico_det":
    raise ValueError("dataset.zero_shot_split is only defined for hico_det")
  stats = {"images": n, "pairs": len(data.pairs)}
  image_keep = np.ones(n, bool)
  if train_fraction < 1:
    k = max(1, int(round(train_fraction * n)))
    chosen = np.random.default_rng([seed, 3]).choice(n, k, replace=False)
    image_keep[:] = False
    image_keep[chosen] = True
    stats["fraction_dropped_images"] = n - k
  num_pairs = np.diff(data.pair_start)
  pair_image = np.repeat(np.arange(n), num_pairs)
  pair_keep = image_keep[pair_image].copy()
  if zero_shot_split:
    unseen = np.zeros(metadata.hico().num_hois, bool)
    unseen[list(metadata.hico().unseen_hois(zero_shot_split))] = True
    hoi = data.pairs[:, 3]
    is_unseen = (hoi >= 0) & unseen[np.maximum(hoi, 0)]
    # One key per (image, subject, object); obj may be -1 (V-COCO).
    key = ((pair_image.astype(np.int64) * 4096 + data.pairs[:, 0]) * 4096
           + data.pairs[:, 1] + 1)
    bad = np.isin(key, key[is_unseen & pair_keep])
    stats["zero_shot_dropped_labels"] = int((bad & pair_keep).sum())
    stats["zero_shot_unseen_labels"] = int((is_unseen & pair_keep).sum())
    pair_keep &= ~bad
  kept_per_image = np.bincount(pair_image[pair_keep], minlength=n)
  empty = image_keep & (kept_per_image == 0)
  if zero_shot_split:
    stats["zero_shot_dropped_images"] = int(empty.sum())
  image_keep &= kept_per_image > 0
  stats["kept_images"] = int(image_keep.sum())
  stats["kept_pairs"] = int(pair_keep.sum())
  return TrainSelection(np.flatnonzero(image_keep), pair_keep, stats)
