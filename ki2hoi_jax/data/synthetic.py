r"""Synthetic HICO-DET / V-COCO-format datasets with a small, learnable grammar.

Writes real JPEG images and annotation files in the on-disk layout of the real
datasets (docs: docs/datasets.md sections 2 and 7), so that every part of the pipeline
(TFDS builder, training, evaluation, prediction files) runs unchanged on them:

  python -m ki2hoi_jax.data.synthetic --out /tmp/synth --num_train 400 \
      --num_test 100 --seed 0 [--image_size 256] [--dataset hico_det|vcoco] \
      [--world basic|compositional]

HICO-DET mode writes `images/{train2015,test2015}/HICO_*.jpg`,
`annotations/{trainval_hico,test_hico}.json`, `annotations/corre_hico.npy`
and the official evaluation's `anno_bbox.mat` and `anno.mat` (at the root,
as in HICO-DET's release);
V-COCO mode writes `images/{train2014,val2014}/COCO_*.jpg`,
`annotations/{trainval_vcoco,test_vcoco}.json` and
`annotations/corre_vcoco.npy`.
Class ids are the real ones (COCO object ids, HICO verb/HOI ids, V-COCO verb
classes), restricted to the subset the grammar can draw (`hoi_subset()`).
`--world compositional` (HICO-DET only) draws the larger world of
docs/synthetic_world.md instead of the default 'basic' one.

This module is the dataset writer (annotation records, file layout, CLI).
What an image shows is the visual grammar in synthetic_scenes.py (scene
templates, poses, labels, frequencies, layout, boxes), drawn with the shapes
of synthetic_shapes.py (primitives, objects, person, background).

Determinism: image i of a split is drawn from its own generator seeded with
(seed, split, i), PIL draws without anti-aliasing and JPEGs use a fixed
quality, so the same seed gives byte-identical files.
"""

import json
import os
from typing import Dict, Sequence

from absl import flags
import numpy as np
from PIL import Image

from ki2hoi_jax import cli
from ki2hoi_jax.data import hico_mat
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic_scenes as scenes

_JPEG_QUALITY = 90
_MIN_IMAGE_SIZE = 96  # Smallest supported longest side.

hoi_subset = scenes.hoi_subset  # Public: synthetic.hoi_subset(dataset, world).


def hico_record(groups, file_name: str, img_id: int) -> dict:
  """The HICO-DET annotation record of one image's groups (`sample_image`)."""
  meta = metadata.hico()
  annotations, hois = [], []
  for g in groups:
    t = g["template"]
    sub = len(annotations)
    annotations.append({"bbox": g["person_box"], "category_id": 1})
    o = meta.objects.index(t.obj)
    obj = len(annotations)
    annotations.append({"bbox": g["object_box"],
                        "category_id": meta.coco_category_ids[o]})
    for verb in t.hico_verbs:
      v = meta.verbs.index(verb)
      hois.append({"subject_id": sub, "object_id": obj, "category_id": v + 1,
                   "hoi_category_id": meta.hoi_index(v, o) + 1})
  return {"file_name": file_name, "img_id": img_id, "annotations": annotations,
          "hoi_annotation": hois}


def _vcoco_record(groups, file_name: str, img_id: int) -> dict:
  meta = metadata.vcoco()
  annotations, hois = [], []
  for g in groups:
    t = g["template"]
    sub = len(annotations)
    annotations.append({"bbox": g["person_box"], "category_id": 1})
    obj = -1
    if g["object_box"] is not None:
      obj = len(annotations)
      o = meta.objects.index(t.obj)
      annotations.append({"bbox": g["object_box"],
                          "category_id": meta.coco_category_ids[o]})
    for verb in t.vcoco_verbs:
      v = meta.verb_classes.index(verb)
      oid = obj if meta.verb_class_role[v] else -1
      hois.append({"subject_id": sub, "object_id": oid, "category_id": v})
  return {"file_name": file_name, "img_id": img_id, "annotations": annotations,
          "hoi_annotation": hois}


_LAYOUT = {
    "hico_det": dict(
        folders=("train2015", "test2015"),
        files=("trainval_hico.json", "test_hico.json"),
        prior="corre_hico.npy",
        names=("HICO_train2015_{:08d}.jpg", "HICO_test2015_{:08d}.jpg")),
    "vcoco": dict(
        folders=("train2014", "val2014"),
        files=("trainval_vcoco.json", "test_vcoco.json"),
        prior="corre_vcoco.npy",
        names=("COCO_train2014_{:012d}.jpg", "COCO_val2014_{:012d}.jpg")),
}


def generate(out_dir: str, num_train: int, num_test: int, seed: int = 0,
             image_size: int = 256, dataset: str = "hico_det",
             world: str = "basic") -> dict:
  """Writes a synthetic dataset in the HICO-DET (or V-COCO) file layout.

  Args:
    out_dir: dataset root; `images/` and `annotations/` are created in it.
    num_train: number of training images.
    num_test: number of test images.
    seed: random seed; equal seeds give byte-identical files.
    image_size: longest image side in pixels (>= 96).
    dataset: 'hico_det' or 'vcoco'.
    world: 'basic' or 'compositional' (synthetic_scenes.py; HICO-DET only).

  Returns:
    Summary: {'dataset', 'root', 'train_images', 'test_images', 'train_pairs',
    'test_pairs', 'train_boxes', 'test_boxes', 'train_class_counts',
    'test_class_counts'}; pairs count hoi_annotation entries and class counts
    map the HOI id (HICO-DET, 1-based) or verb class (V-COCO, 0-based) to its
    number of entries.
  """
  scenes.templates(dataset, world)  # Checks both names.
  if image_size < _MIN_IMAGE_SIZE:
    raise ValueError(f"image_size must be >= {_MIN_IMAGE_SIZE}, got "
                     f"{image_size}")
  layout = _LAYOUT[dataset]
  ann_dir = os.path.join(out_dir, "annotations")
  os.makedirs(ann_dir, exist_ok=True)
  summary = {"dataset": dataset, "root": out_dir}
  record_fn = hico_record if dataset == "hico_det" else _vcoco_record
  next_id = 1
  split_records = {}
  for split_id, (split, count) in enumerate((("train", num_train),
                                             ("test", num_test))):
    img_dir = os.path.join(out_dir, "images", layout["folders"][split_id])
    os.makedirs(img_dir, exist_ok=True)
    records = []
    class_counts: Dict[int, int] = {}
    num_boxes = 0
    for i in range(count):
      # HICO numbers each split from 1; COCO ids are unique across splits.
      img_id = i + 1 if dataset == "hico_det" else next_id
      next_id += 1
      rng = np.random.default_rng([seed, split_id, i])
      pixels, groups = scenes.sample_image(
          rng, image_size, dataset, world,
          balanced=split == "test" and scenes.balanced_test_split(world))
      name = layout["names"][split_id].format(img_id)
      Image.fromarray(pixels).save(os.path.join(img_dir, name), "JPEG",
                                   quality=_JPEG_QUALITY)
      rec = record_fn(groups, name, img_id)
      records.append(rec)
      num_boxes += len(rec["annotations"])
      key = "hoi_category_id" if dataset == "hico_det" else "category_id"
      for h in rec["hoi_annotation"]:
        class_counts[h[key]] = class_counts.get(h[key], 0) + 1
    with open(os.path.join(ann_dir, layout["files"][split_id]), "w") as fp:
      json.dump(records, fp)
    split_records[split] = records
    summary[f"{split}_images"] = count
    summary[f"{split}_pairs"] = sum(len(r["hoi_annotation"]) for r in records)
    summary[f"{split}_boxes"] = num_boxes
    summary[f"{split}_class_counts"] = dict(sorted(class_counts.items()))
  if dataset == "hico_det":
    hico_mat.write_official_files(out_dir, split_records["train"],
                                  split_records["test"])
    prior = metadata.hico().verb_object_matrix()
  else:
    prior = metadata.vcoco().verb_object_matrix()[:, :80]
  np.save(os.path.join(ann_dir, layout["prior"]), prior)
  return summary


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("out", None, "Dataset root to write.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_integer("num_train", 400, "Training images.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_test", 100, "Test images.",
                       flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Renderer seed.", flag_values=flag_values)
  flags.DEFINE_integer("image_size", 256, "Longest image side (pixels).",
                       flag_values=flag_values)
  flags.DEFINE_enum("dataset", "hico_det", scenes.DATASETS,
                    "Format and class vocabulary to write.",
                    flag_values=flag_values)
  flags.DEFINE_enum("world", "basic", scenes.WORLDS,
                    "Scene world to draw ('compositional': HICO-DET only).",
                    flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name): prints a JSON summary.

  Returns:
    The exit status, 0.
  """
  args = cli.parse_flags(argv, define_flags, __doc__)
  summary = generate(args.out, args.num_train, args.num_test, args.seed,
                     args.image_size, args.dataset, args.world)
  short = {k: v for k, v in summary.items() if not k.endswith("class_counts")}
  short["train_classes"] = len(summary["train_class_counts"])
  short["test_classes"] = len(summary["test_class_counts"])
  print(json.dumps(short))
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.data.synthetic` and `ki2hoi-synthetic-data`."""
  cli.run(main, user_errors=(OSError, ValueError))


if __name__ == "__main__":
  entry_point()
