r"""TFDS builders of HICO-DET and V-COCO from the GEN-VLKT folder layout.

The "manual download" folder is the user's dataset root (docs/datasets.md section 2:
`images/` and `annotations/`). Build from Python with `build(...)` or from the
command line (no `tfds build` needed):

  python -m ki2hoi_jax.data.tfds_builder --root=/data/hico_20160224_det \
      --data_dir=/data/tfds [--dataset=vcoco] [--on_bad_box=clip] \
      [--on_bad_image=skip]

Each split ('train', 'test') holds the records that pass
`annotations.iter_split` (validation, docs/datasets.md section 3 steps 2-3 for
training), in annotation-file order (shuffling at build time is disabled, so
position i of a split is its i-th kept record). Features per example:

  image        encoded JPEG (the original file bytes, or an RGB re-encoding)
  file_name    image file name
  image_index  position of the record in the annotation file
  size         [2] int32 original (height, width)
  boxes        [N, 4] float32 absolute xyxy (clipped if on_bad_box='clip')
  labels       [N] int32 object index
  pairs        [M, 4] int32 (subject, object, verb, hoi), see annotations.py

Files are written as ArrayRecord, so the input pipeline can read examples by
position (deterministic shuffling and cheap resumption). The annotations of
each split are also stored, as compact arrays, in the builder's metadata
(`builder.info.metadata['splits']`), with the build's summary counters and
options; the pipeline reads them without touching the image bytes.

Zero-shot filtering and `dataset.train_fraction` are NOT applied here: they
are applied by the input pipeline (ki2hoi_jax/data/input_pipeline.py), so one
build serves the fully supervised run and every zero-shot split.

Stale builds: each build records the fingerprint of its inputs
(`input_fingerprint`: sha256 of the annotation files, the names, sizes and
modification times of the image files, the validator options) in its
metadata. `build` recomputes it and rebuilds when it differs (for example
after a corrupt image that the first build skipped has been repaired),
logging which input changed.
"""

import functools
import hashlib
import logging
import os
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from ki2hoi_jax import cli
from ki2hoi_jax.data import annotations

FORMAT_VERSION = 1  # Layout of builder.info.metadata['splits'].
FINGERPRINT_VERSION = 1  # Layout of builder.info.metadata['fingerprint'].

_INSTRUCTIONS = """\
Pass the dataset folder as the manual download dir. It must contain
annotations/trainval_hico.json, annotations/test_hico.json,
images/train2015/ and images/test2015/ for HICO-DET (docs/datasets.md section 2), or
annotations/trainval_vcoco.json, annotations/test_vcoco.json,
images/train2014/ and images/val2014/ for V-COCO.
"""


class _HoiBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared code of the HICO-DET and V-COCO builders."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "GEN-VLKT layout, validated records."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  DATASET = ""
  # Nothing is downloaded. Overriding these two class properties also avoids
  # TFDS's lookup of a checksums file next to the code, which imports the
  # optional `importlib_resources` package.
  code_path = None
  url_infos = None

  def __init__(self, *, on_bad_box: str = "clip", on_bad_image: str = "skip",
               **kwargs):
    annotations.check_choice("on_bad_box", on_bad_box, ("clip", "reject"))
    annotations.check_choice("on_bad_image", on_bad_image,
                             annotations.ON_BAD_IMAGE)
    self._on_bad_box = on_bad_box
    self._on_bad_image = on_bad_image
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.DATASET} in the GEN-VLKT annotation format.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            "file_name": tfds.features.Text(),
            "image_index": tfds.features.Scalar(np.int32),
            "size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "pairs": tfds.features.Tensor(shape=(None, 4), dtype=np.int32),
        }),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    # Taken before the inputs are read: a file changed during the build makes
    # the next `build` rebuild.
    fingerprint = input_fingerprint(root, self.DATASET,
                                    on_bad_box=self._on_bad_box,
                                    on_bad_image=self._on_bad_image)
    self.info.metadata.update({
        "dataset": self.DATASET, "root": os.path.realpath(root),
        "on_bad_box": self._on_bad_box, "on_bad_image": self._on_bad_image,
        "format_version": FORMAT_VERSION, "fingerprint": fingerprint,
        "splits": {}, "summary": {}})
    return {split: self._generate_examples(root, split)
            for split in annotations.SPLITS}

  def _generate_examples(self, root: str, split: str):
    stats = annotations.SplitStats(f"{self.DATASET}/{split}")
    columns: Dict[str, List[Any]] = {
        "image_index": [], "file_name": [], "size": [], "num_boxes": [],
        "boxes": [], "labels": [], "num_pairs": [], "pairs": []}
    for rec, data in annotations.iter_split(
        root, split, self.DATASET, on_bad_box=self._on_bad_box,
        on_bad_image=self._on_bad_image, with_bytes=True, stats=stats):
      columns["image_index"].append(rec.index)
      columns["file_name"].append(rec.file_name)
      columns["size"].append([rec.height, rec.width])
      columns["num_boxes"].append(len(rec.boxes))
      columns["boxes"].extend(rec.boxes.tolist())
      columns["labels"].extend(rec.labels.tolist())
      columns["num_pairs"].append(len(rec.pairs))
      columns["pairs"].extend(rec.pairs.tolist())
      yield rec.index, {
          "image": data, "file_name": rec.file_name,
          "image_index": rec.index,
          "size": np.array([rec.height, rec.width], np.int32),
          "boxes": rec.boxes.reshape(-1, 4),
          "labels": rec.labels, "pairs": rec.pairs.reshape(-1, 4)}
    if not stats.num_images:  # Else TFDS fails naming no file.
      path, _ = annotations.split_paths(root, split, self.DATASET)
      raise annotations.AnnotationError(
          f"{path}: no record passed validation, the split would be empty "
          f"({stats.summary()})")
    self.info.metadata["splits"][split] = columns
    self.info.metadata["summary"][split] = stats.to_dict()


class HicoDet(_HoiBuilder, skip_registration=True):
  """HICO-DET (600 HOIs, 117 verbs, 80 objects)."""
  name = "hico_det"
  DATASET = "hico_det"


class Vcoco(_HoiBuilder, skip_registration=True):
  """V-COCO (29 verb classes, 263 verb-object classes)."""
  name = "vcoco"
  DATASET = "vcoco"


_BUILDERS = {"hico_det": HicoDet, "vcoco": Vcoco}


def builder_class(dataset: str):
  """The builder class of 'hico_det' | 'vcoco'."""
  annotations.check_choice("dataset", dataset, tuple(_BUILDERS))
  return _BUILDERS[dataset]


# ----------------------------------------------------------- stale builds


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _listing(folder: str) -> Dict[str, Any]:
  """Number and sha256 of the (name, size, mtime) of the files below folder.

  Dot files (.DS_Store, ...) are left out; the pixels are not read.
  """
  lines, todo = [], [""]
  while todo:
    rel = todo.pop()
    with os.scandir(os.path.join(folder, rel)) as entries:
      for entry in entries:
        if entry.name.startswith("."):
          continue
        name = os.path.join(rel, entry.name)
        if entry.is_dir():
          todo.append(name)
        else:
          try:
            st = entry.stat()
            lines.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
          except OSError:  # A dangling link: the validator skips the image.
            lines.append(f"{name}\tunreadable")
  lines.sort()
  return {"files": len(lines),
          "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def input_fingerprint(root: str, dataset: str = "hico_det", *,
                      on_bad_box: str = "clip", on_bad_image: str = "skip"
                      ) -> Dict[str, Any]:
  """What a build is made from, to tell whether a build is stale.

  Args:
    root: dataset folder (annotations.check_root).
    dataset: 'hico_det' | 'vcoco'.
    on_bad_box: validator option.
    on_bad_image: validator option.

  Returns:
    JSON-able dict: the validator options and `inputs`, keyed by the path
    relative to root: annotation file -> {'sha256' of its bytes}; image
    folder ('.../') -> `{'files', 'sha256'}` of the file names, sizes and
    modification times (cheap: one stat per image, no pixel bytes).
  """
  inputs = {}
  for split in annotations.SPLITS:
    ann, images = annotations.split_paths(root, split, dataset)
    inputs[os.path.relpath(ann, root)] = {"sha256": _file_sha256(ann)}
    inputs[os.path.relpath(images, root) + "/"] = _listing(images)
  return {"version": FINGERPRINT_VERSION, "on_bad_box": on_bad_box,
          "on_bad_image": on_bad_image, "inputs": inputs}


def stale_reasons(meta: Dict[str, Any], fingerprint: Dict[str, Any]
                  ) -> List[str]:
  """Why a build (its metadata) does not match `fingerprint`; [] if it does."""
  if meta.get("format_version") != FORMAT_VERSION:
    return [f"its format version is {meta.get('format_version')}, this code "
            f"writes {FORMAT_VERSION}"]
  have: Optional[Dict[str, Any]] = meta.get("fingerprint")
  if not have or have.get("version") != fingerprint["version"]:
    return ["it records no input fingerprint of this version"]
  reasons = [f"{key} was {have.get(key)!r}, now {fingerprint[key]!r}"
             for key in ("on_bad_box", "on_bad_image")
             if have.get(key) != fingerprint[key]]
  for name, now in fingerprint["inputs"].items():
    then = have["inputs"].get(name)
    if then == now:
      continue
    if "files" in now and then:
      reasons.append(f"{name} changed ({then['files']} files then, "
                     f"{now['files']} now; names, sizes or modification "
                     "times differ)")
    else:
      reasons.append(f"{name} changed (its content differs)")
  return reasons


def _remove_build(builder: tfds.core.DatasetBuilder) -> None:
  """Deletes a prepared build's version folder (and leftovers of earlier ones).

  The folder is first renamed, so an interrupted deletion never leaves a
  half-deleted folder that TFDS would take for a build.
  """
  path = builder.data_path
  if not (path / "dataset_info.json").exists():
    raise RuntimeError(f"{path} is not a TFDS build; not deleting it")
  path.rename(path.parent / f"stale.{uuid.uuid4().hex}_{path.name}")
  for stale in path.parent.glob(f"stale.*_{path.name}"):
    stale.rmtree()


def build(root: str, data_dir: str, dataset: str = "hico_det", *,
          on_bad_box: str = "clip", on_bad_image: str = "skip"
          ) -> tfds.core.DatasetBuilder:
  """Builds (when missing or stale) and returns the TFDS builder of a dataset.

  An existing build in `data_dir` is reused when its input fingerprint
  (`input_fingerprint`) matches; otherwise it is deleted and rebuilt, and one
  warning line says which input changed.

  Args:
    root: dataset folder with images/ and annotations/ (the manual dir).
    data_dir: TFDS data dir to write to / read from.
    dataset: 'hico_det' | 'vcoco'.
    on_bad_box: 'clip' | 'reject' (annotations.py).
    on_bad_image: 'skip' | 'fail'.

  Returns:
    The prepared builder.

  Raises:
    annotations.DatasetRootError: root lacks the dataset layout.
    annotations.DatasetError: data_dir already holds a build from another
      root or with other validator options (delete it or use another
      data_dir): it may be another run's, so it is not rebuilt.
    annotations.AnnotationError: invalid annotations, an empty split.
  """
  annotations.check_root(root, dataset)
  make = functools.partial(builder_class(dataset), data_dir=data_dir,
                           on_bad_box=on_bad_box, on_bad_image=on_bad_image)
  builder = make()
  if builder.is_prepared():
    meta = builder.info.metadata
    want = {"root": os.path.realpath(root), "on_bad_box": on_bad_box,
            "on_bad_image": on_bad_image}
    have = {k: meta.get(k) for k in want}
    if have != want:  # Another run's build: never delete it.
      raise annotations.DatasetError(
          f"{builder.data_path} holds a {dataset} build with {have}, not "
          f"{want}; delete that folder or choose another data_dir")
    start = time.perf_counter()
    reasons = stale_reasons(meta, input_fingerprint(
        root, dataset, on_bad_box=on_bad_box, on_bad_image=on_bad_image))
    if not reasons:
      logging.info("Using the existing %s build in %s (inputs unchanged, "
                   "checked in %.3f s)", dataset, builder.data_path,
                   time.perf_counter() - start)
      return builder
    logging.warning("Rebuilding the %s build in %s: %s", dataset,
                    builder.data_path, "; ".join(reasons))
    _remove_build(builder)
    builder = make()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=root,
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


def load(data_dir: str, dataset: str = "hico_det"
         ) -> tfds.core.DatasetBuilder:
  """The prepared builder in `data_dir` (raises if it was never built)."""
  builder = builder_class(dataset)(data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(f"no {dataset} build in {data_dir}; run "
                            "python -m ki2hoi_jax.data.tfds_builder first")
  return builder


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("root", None,
                      "Dataset folder with images/ and annotations/.",
                      required=True, flag_values=flag_values)
  flags.DEFINE_string("data_dir", None, "TFDS data dir.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_enum("dataset", "hico_det", sorted(_BUILDERS),
                    "Dataset format of the root.", flag_values=flag_values)
  flags.DEFINE_enum("on_bad_box", "clip", ("clip", "reject"),
                    "A box outside its image: clip it or reject the record.",
                    flag_values=flag_values)
  flags.DEFINE_enum("on_bad_image", "skip", annotations.ON_BAD_IMAGE,
                    "An unreadable image: skip its record or fail.",
                    flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  builder = build(args.root, args.data_dir, args.dataset,
                  on_bad_box=args.on_bad_box, on_bad_image=args.on_bad_image)
  for split, summary in builder.info.metadata.get("summary", {}).items():
    print(f"{split}: {summary['num_images']} images, {summary['num_pairs']} "
          f"pairs, skipped {summary['skipped']}")
  print(f"written to {builder.data_path}")
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.data.tfds_builder` and `ki2hoi-build-tfds`."""
  cli.run(main, user_errors=(OSError, annotations.DatasetError))


if __name__ == "__main__":
  entry_point()
