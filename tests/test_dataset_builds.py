"""Dataset builds: stale builds are rebuilt, user errors name what to fix.

Issue 17: a build is reused only while its inputs (annotation files, image
files, validator options) are unchanged; an empty annotation list and a wrong
`config.dataset.root` raise errors that name the file or the setting.
"""

import json
import logging
import os
import shutil

import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import splits
from ki2hoi_jax.data import synthetic
from ki2hoi_jax.data import tfds_builder

NUM_TRAIN, NUM_TEST = 6, 3
CORRUPT = 2  # The training record whose image the tests damage.


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  root = tmp_path_factory.mktemp("source") / "root"
  synthetic.generate(str(root), num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0,
                     image_size=96)
  return str(root)


@pytest.fixture
def root(source, tmp_path):
  """A fresh copy of the synthetic dataset for one test."""
  path = str(tmp_path / "root")
  shutil.copytree(source, path)
  return path


@pytest.fixture
def builds(monkeypatch):
  """The data paths of every TFDS build run during the test."""
  calls = []
  prepare = tfds_builder._HoiBuilder.download_and_prepare

  def counting(self, *args, **kwargs):
    calls.append(os.fspath(self.data_path))
    return prepare(self, *args, **kwargs)

  monkeypatch.setattr(tfds_builder._HoiBuilder, "download_and_prepare",
                      counting)
  return calls


def _config(root, tmp_path, **dataset):
  config = base.get_config()
  config.dataset.root = root
  config.dataset.tfds_data_dir = str(tmp_path / "tfds")
  config.dataset.update(dataset)
  return config


def _prepare(config, tmp_path):
  return input_pipeline.prepare_dataset(config, str(tmp_path))


def _rebuild_lines(caplog):
  return [r.getMessage() for r in caplog.records
          if r.getMessage().startswith("Rebuilding")]


def test_repaired_image_is_rebuilt(root, tmp_path, builds, caplog):
  with open(os.path.join(root, "annotations", "trainval_hico.json")) as f:
    name = json.load(f)[CORRUPT]["file_name"]
  image = os.path.join(root, "images", "train2015", name)
  with open(image, "rb") as f:
    good = f.read()
  with open(image, "wb") as f:
    f.write(good[:len(good) // 3])
  config = _config(root, tmp_path)
  builder = _prepare(config, tmp_path)
  assert builder.info.metadata["summary"]["train"]["skipped"] == {
      "image_corrupt": 1}
  assert builder.info.splits["train"].num_examples == NUM_TRAIN - 1

  with open(image, "wb") as f:  # The user repairs the image.
    f.write(good)
  with caplog.at_level(logging.INFO):
    builder = _prepare(config, tmp_path)
  assert len(builds) == 2
  assert builder.info.splits["train"].num_examples == NUM_TRAIN
  assert CORRUPT in splits.split_data(builder, "train").image_index
  lines = _rebuild_lines(caplog)
  assert len(lines) == 1, lines
  assert "images/train2015/ changed (6 files then, 6 now" in lines[0]
  assert "annotations" not in lines[0]
  leftovers = os.listdir(os.path.dirname(os.fspath(builder.data_path)))
  assert leftovers == ["1.0.0"]


def test_unchanged_inputs_reuse_the_build(root, tmp_path, builds, caplog):
  config = _config(root, tmp_path)
  builder = _prepare(config, tmp_path)
  fingerprint = builder.info.metadata["fingerprint"]
  assert set(fingerprint["inputs"]) == {
      "annotations/trainval_hico.json", "annotations/test_hico.json",
      "images/train2015/", "images/test2015/"}
  assert fingerprint["inputs"]["images/test2015/"]["files"] == NUM_TEST
  info = os.path.join(os.fspath(builder.data_path), "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  with caplog.at_level(logging.INFO):
    again = _prepare(config, tmp_path)
  assert builds == [os.fspath(builder.data_path)]
  assert os.stat(info).st_mtime_ns == before
  assert again.info.metadata["fingerprint"] == fingerprint
  assert not _rebuild_lines(caplog)
  assert any("inputs unchanged" in r.getMessage() for r in caplog.records)

  # Another validator option may be another run's build: refused, kept.
  config.dataset.on_bad_image = "fail"
  with pytest.raises(annotations.DatasetError, match="delete that folder"):
    _prepare(config, tmp_path)
  config.dataset.on_bad_image = "skip"
  assert len(builds) == 1
  # Other annotation bytes: rebuilt.
  test_file = os.path.join(root, "annotations", "test_hico.json")
  with open(test_file) as f:
    records = json.load(f)
  with open(test_file, "w") as f:
    json.dump(records, f, indent=1)
  caplog.clear()
  with caplog.at_level(logging.INFO):
    _prepare(config, tmp_path)
  assert len(builds) == 2
  assert _rebuild_lines(caplog) == [
      f"Rebuilding the hico_det build in {builds[0]}: "
      "annotations/test_hico.json changed (its content differs)"]


def test_build_without_fingerprint_is_rebuilt(root, tmp_path, builds,
                                              caplog):
  """A build written before fingerprints were recorded is rebuilt once."""
  config = _config(root, tmp_path)
  builder = _prepare(config, tmp_path)
  path = os.path.join(os.fspath(builder.data_path), "metadata.json")
  with open(path) as f:
    meta = json.load(f)
  del meta["fingerprint"]
  with open(path, "w") as f:
    json.dump(meta, f)
  with caplog.at_level(logging.INFO):
    builder = _prepare(config, tmp_path)
  assert len(builds) == 2 and "fingerprint" in builder.info.metadata
  assert _rebuild_lines(caplog)[0].endswith(
      "it records no input fingerprint of this version")


@pytest.mark.parametrize("damage,message", [
    ("empty", "the annotation list is empty ([])"),
    ("no_images", "no record passed validation, the split would be empty"),
])
def test_empty_split_names_the_file(root, tmp_path, damage, message):
  ann = os.path.join(root, "annotations", "trainval_hico.json")
  if damage == "empty":
    with open(ann, "w") as f:
      f.write("[]")
  else:
    folder = os.path.join(root, "images", "train2015")
    for name in os.listdir(folder):
      os.remove(os.path.join(folder, name))
  with pytest.raises(annotations.AnnotationError) as e:
    _prepare(_config(root, tmp_path), tmp_path)
  assert str(e.value).startswith(f"{ann}: {message}")


@pytest.mark.parametrize("dataset,damage,problem", [
    ("hico_det", "absent", "does not exist"),
    ("hico_det", "annotations", "has no annotations/ folder"),
    ("hico_det", "images/test2015", "lacks images/test2015/"),
    ("vcoco", "absent", "does not exist"),
])
def test_wrong_root_names_the_setting(root, tmp_path, dataset, damage,
                                      problem):
  if damage == "absent":
    root = str(tmp_path / "nowhere")
  else:
    shutil.rmtree(os.path.join(root, damage))
  with pytest.raises(FileNotFoundError) as e:
    _prepare(_config(root, tmp_path, name=dataset), tmp_path)
  assert isinstance(e.value, annotations.DatasetError)
  layout = ", ".join(annotations.expected_layout(dataset))
  assert str(e.value) == (
      f"config.dataset.root={root!r} {problem}; expected a {dataset} folder "
      f"with {layout} (README, 'Using the real HICO-DET')")
  if dataset == "hico_det":
    assert layout == ("annotations/trainval_hico.json, "
                      "annotations/test_hico.json, images/train2015/, "
                      "images/test2015/")
