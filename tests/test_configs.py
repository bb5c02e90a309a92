"""Every config file loads, validates, and rejects bad overrides."""

import glob
import os
import subprocess
import sys

import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.config_lib import files
from ki2hoi_jax.config_lib import saved as saved_config
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not p.endswith("__init__.py"))
ABLATION_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "configs", "ablations", "*.py"))
    if not p.endswith("__init__.py"))


def _load(name):
  if name == "base":
    return base.get_config()
  return files.load_config(os.path.join(ROOT, "configs", f"{name}.py"))


def _ablation(name):
  return files.load_module(
      os.path.join(ROOT, "configs", "ablations", f"{name}.py"))


def test_expected_config_files_exist():
  expected = {"default", "rf_uc", "nf_uc", "uc", "uo", "uv", "vcoco",
              "demo"}
  assert expected <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", ["base"] + CONFIG_NAMES)
def test_config_loads_and_validates(name):
  config = _load(name)
  validation.validate(config)
  # Every experiment only changes values, never adds fields to the base.
  base_keys = set(_flatten(_load("base")))
  assert set(_flatten(config)) == base_keys


def test_expected_ablation_files_exist():
  expected = {"table3_data_50", "table3_data_25", "table3_data_15",
              "table4_a_baseline", "table4_b_clip",
              "table4_c_ho_pair_encoder", "table4_d_verb_features",
              "table5_l1", "table5_l2", "table5_l1_l2", "table5_none",
              "table6_verb_layers_1", "table6_verb_layers_2",
              "table6_verb_layers_3"}
  assert set(ABLATION_NAMES) == expected


@pytest.mark.parametrize("name", ABLATION_NAMES)
def test_ablation_config_loads_validates_and_names_its_table(name):
  module = _ablation(name)
  config = module.get_config()
  validation.validate(config)
  assert set(_flatten(config)) == set(_flatten(_load("base")))
  table = {"table3": "Table III", "table4": "Table IV", "table5": "Table V",
           "table6": "Table VI"}[name.split("_")[0]]
  assert module.__doc__.startswith(
      table + (" row (" if table == "Table IV" else ","))
  assert f"--config=configs/ablations/{name}.py" in module.__doc__


def test_ablation_configs_change_what_their_rows_say():
  def diff(name, base):
    a = _flatten(_ablation(name).get_config())
    b = _flatten(_load(base))
    return {k: v for k, v in a.items() if b[k] != v}
  for pct in (50, 25, 15):
    assert diff(f"table3_data_{pct}", "default") == {
        "dataset.train_fraction": pct / 100}
  assert diff("table4_a_baseline", "uv") == {
      "model.encoder_type": "detr", "model.clip_cross_attention": False,
      "model.classifier": "linear", "model.verb_decoder": False,
      "loss.reconstruction": "none"}
  assert diff("table4_b_clip", "uv") == {"model.encoder_type": "detr",
                                         "model.verb_decoder": False}
  assert diff("table4_c_ho_pair_encoder", "uv") == {
      "model.verb_decoder": False}
  assert diff("table4_d_verb_features", "uv") == {}
  for name, kind in (("l1", "l1"), ("l2", "l2"), ("l1_l2", "l1+l2"),
                     ("none", "none")):
    assert diff(f"table5_{name}", "uv") == (
        {} if kind == "l1" else {"loss.reconstruction": kind})
  for n in (1, 2, 3):
    assert diff(f"table6_verb_layers_{n}", "uv") == (
        {} if n == 1 else {"model.verb_decoder_layers": n})


def _flatten(config, prefix=""):
  out = {}
  for k, v in config.items():
    if hasattr(v, "items"):
      out.update(_flatten(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("split", metadata.ZERO_SHOT_SPLITS)
def test_zero_shot_configs_name_their_split(split):
  config = _load(split)
  assert config.dataset.zero_shot_split == split
  assert len(metadata.hico().unseen_hois(split)) in (84, 100, 120)


def test_paper_defaults():
  config = _load("base")
  assert config.optimizer.learning_rate == 1e-4
  assert config.optimizer.backbone_learning_rate == 1e-5
  assert config.optimizer.clip_learning_rate == 1e-5  # GEN-VLKT's lr_clip.
  assert config.batch_size == 32  # 8 per GPU x 4 GPUs.
  assert config.model.roi_sampling_ratio == 0  # Adaptive (torchvision).
  assert not config.init.allow_random
  assert config.optimizer.lr_drop_epoch == 60
  assert config.optimizer.num_epochs == 90
  assert config.model.num_queries == 64 and config.model.d_model == 256
  assert config.loss.focal_alpha == 0.5 and config.loss.focal_gamma == 2.0
  assert config.inference.nms_threshold == 0.7
  # L_re: GEN-VLKT's mimic loss (raw features, every layer, L1, weight 20).
  assert config.loss.reconstruction == "l1"
  assert config.loss.reconstruction_form == "raw_all_layers"
  assert config.loss.reconstruction_loss_coef == 20.0
  # Every Table IV component on.
  assert config.model.encoder_type == "ho_pair"
  assert config.model.clip_cross_attention and config.model.verb_decoder
  assert config.model.classifier == "clip_text"
  assert _load("vcoco").model.interaction_space == "verb"
  assert config.model.prompt_style == "gerund"  # GEN-VLKT/HOICLIP prompts.


def test_only_the_zero_shot_demo_ranks_by_the_product():
  # The paper's sum (eq. 18) everywhere but configs/demo.py, whose unseen
  # classes are scored by the crop fusion (docs/synthetic_benchmarks.md, Synthetic Table I).
  assert _load("base").inference.score_fusion == "sum"
  assert _load("uv").inference.score_fusion == "sum"
  assert _load("vcoco_demo").inference.score_fusion == "sum"
  demo = _load("demo")
  assert demo.inference.score_fusion == "product"
  assert demo.inference.clip_pair_fusion == 0.5


def test_demo_roi_size_is_the_full_map_and_overridable():
  # paper_choices row 4's variant: a plain None field cannot be overridden.
  demo = os.path.join(ROOT, "configs", "demo.py")
  assert files.load_config(demo).model.roi_size is None
  assert files.load_config(demo, ["model.roi_size=7"]).model.roi_size == 7
  validation.validate(files.load_config(demo, ["model.roi_size=7"]))


def test_config_saved_before_prompt_style_reads_bare():
  """A run saved before `model.prompt_style` embedded bare-verb prompts."""
  saved = _load("demo").to_dict()
  del saved["model"]["prompt_style"]
  assert saved_config.config_from_saved(saved).model.prompt_style == "bare"
  saved["model"]["prompt_style"] = "gerund"
  assert saved_config.config_from_saved(saved).model.prompt_style == "gerund"


@pytest.mark.parametrize("path,value,match", [
    ("inference.score_fusion", "summ", "score_fusion"),
    ("dataset.zero_shot_split", "rf-uc", "zero_shot_split"),
    ("model.interaction_space", "hoii", "interaction_space"),
    ("model.prompt_style", "gerunds", r"model\.prompt_style='gerunds' is not "
     r"one of \('gerund', 'bare'\)"),
    ("batch_size", 0, "batch_size"),
    ("dataset.train_fraction", 1.5, "train_fraction"),
    # Legal types, wrong values (issue 17.6): each trained or predicted
    # silently before.
    ("optimizer.learning_rate", -1e-4, r"optimizer\.learning_rate=-0\.0001 "
     "must be > 0"),
    ("optimizer.learning_rate", float("nan"), "learning_rate=nan"),
    ("optimizer.backbone_learning_rate", -1e-5, "backbone_learning_rate"),
    ("optimizer.clip_learning_rate", -1e-5, "clip_learning_rate"),
    ("optimizer.weight_decay", -0.1, r"weight_decay=-0\.1 must be >= 0"),
    ("optimizer.pretrained_anchor", -1.0, "pretrained_anchor=-1.0"),
    # An anchor needs a detector checkpoint to hold the detector near.
    ("optimizer.pretrained_anchor", 10.0, "init.synthetic_detector_steps"),
    ("loss.giou_loss_coef", -1.0, "giou_loss_coef"),
    ("loss.reconstruction_loss_coef", -20.0, "reconstruction_loss_coef"),
    ("loss.cost_bbox", -2.5, "cost_bbox"),
    ("loss.focal_alpha", 1.5, r"focal_alpha=1\.5 must be in \[0, 1\]"),
    ("inference.nms_threshold", -0.1, "nms_threshold"),
    ("inference.top_k", 0, r"inference\.top_k=0 must be > 0"),
    ("predict.score_threshold", 2.0, r"predict\.score_threshold=2\.0 must be"
     r" in \[0, 1\]"),
    ("predict.top_k", -5, r"predict\.top_k=-5 must be > 0"),
    ("model.dropout", 1.2, "dropout"),
    ("model.encoder_type", "dert", "encoder_type"),
    ("model.classifier", "clip", "model.classifier"),
    ("loss.reconstruction_form", "raw", "reconstruction_form"),
    ("loss.reconstruction", "l3", "reconstruction"),
    ("predict.verbs", "ride", r"classifier='linear' scores only"),
])
def test_bad_values_name_the_field(path, value, match):
  config = _load("default")
  if path == "predict.verbs":  # Open vocabulary with a linear head.
    config.model.classifier = "linear"
  node = config
  *parents, leaf = path.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate(config)


@pytest.mark.parametrize("clip,detr,named", [
    ("", "", "config.init.clip_checkpoint and config.init.detr_checkpoint "
     "are empty"),
    ("clip.msgpack", "", "config.init.detr_checkpoint is empty"),
    ("", "detr.msgpack", "config.init.clip_checkpoint is empty"),
])
def test_real_dataset_without_checkpoints_is_an_error(clip, detr, named):
  """No silent random weights: the message names both flags and the README."""
  config = _load("uv")
  config.dataset.root = "/data/hico_20160224_det"
  config.init.clip_checkpoint, config.init.detr_checkpoint = clip, detr
  with pytest.raises(validation.ConfigError) as err:
    validation.validate(config)
  message = str(err.value)
  assert named in message
  for text in ("--config.init.clip_checkpoint=",
               "--config.init.detr_checkpoint=", "'Pretrained weights'",
               "--config.init.allow_random=True"):
    assert text in message
  assert "\n" not in message
  config.init.allow_random = True  # On purpose: accepted.
  validation.validate(config)


def test_checkpoint_check_passes_synthetic_and_complete_runs():
  config = _load("uv")
  assert not config.dataset.root  # Synthetic data: random weights are fine.
  validation.validate(config)
  config.dataset.root = "/data/hico_20160224_det"
  config.init.clip_checkpoint = "clip.msgpack"
  config.init.detr_checkpoint = "detr.msgpack"
  validation.validate(config)
  # A synthetic-knowledge CLIP made before training counts as a checkpoint.
  config.init.clip_checkpoint = ""
  config.init.synthetic_clip_steps = 100
  validation.validate(config)
  # So does a synthetic detector (train/pretrain_detector.py).
  config.init.detr_checkpoint = ""
  with pytest.raises(validation.ConfigError, match="init.detr_checkpoint"):
    validation.validate(config)
  config.init.synthetic_detector_steps = 100
  validation.validate(config)
  # The demo's tiny model takes no checkpoint on any dataset.
  demo = _load("demo")
  demo.dataset.root = "/data/hico_20160224_det"
  validation.validate(demo)


def _main(*args):
  return subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.main", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_cli_rejects_misspelled_override(tmp_path):
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
                 "--config.model.roi_sz=3")
  assert result.returncode == 2
  assert "roi_size" in result.stderr and "Traceback" not in result.stderr


def test_cli_real_dataset_without_checkpoints_is_one_line(tmp_path):
  result = _main("--config=configs/uv.py", f"--workdir={tmp_path / 'w'}",
                 f"--config.dataset.root={tmp_path}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1
  assert ("error: config.init.clip_checkpoint and config.init.detr_checkpoint"
          " are empty" in lines[0])
  assert "--config.init.detr_checkpoint=" in lines[0]


def test_cli_rejects_bad_value(tmp_path):
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
                 "--config.mode=trian")
  assert result.returncode == 2
  assert "config.mode" in result.stderr


def test_unit_interval_and_positive_int_checks():
  validation.check_unit_interval("score_threshold", 0.0)
  validation.check_unit_interval("score_threshold", 1.0)
  for bad in (-0.01, 1.01, float("nan")):
    with pytest.raises(validation.ConfigError, match="score_threshold="):
      validation.check_unit_interval("score_threshold", bad)
  validation.check_positive_int("top_k", 1)
  for bad in (0, -5, 2.5, True):
    with pytest.raises(validation.ConfigError,
                       match=r"top_k=.* must be an integer >= 1"):
      validation.check_positive_int("top_k", bad)


def test_cli_override_without_config_says_so(tmp_path):
  result = _main(f"--workdir={tmp_path}", "--config.dataset.root=/data/hico")
  assert result.returncode == 2
  assert ("--config.dataset.root overrides a field of the experiment config, "
          "but no --config was given") in result.stderr
  assert "Unknown command line flag" not in result.stderr


def test_cli_negative_learning_rate_is_one_line(tmp_path):
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
                 "--config.optimizer.learning_rate=-1e-4")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert ("error: config.optimizer.learning_rate=-0.0001 must be > 0"
          in result.stderr)



@pytest.mark.parametrize("kwargs,match", [
    ({"top_k": 0}, r"top_k=0 must be an integer >= 1"),
    ({"top_k": -5}, r"top_k=-5 must be an integer >= 1"),
    ({"score_threshold": 2.0}, r"score_threshold=2\.0 must be in \[0, 1\]"),
    ({"score_threshold": -0.5}, r"score_threshold=-0\.5 must be in"),
])
def test_predict_rejects_bad_flags_before_any_work(kwargs, match, tmp_path):
  """--top_k / --score_threshold are checked before the checkpoint is read."""
  from ki2hoi_jax.inference import predict  # pylint: disable=g-import-not-at-top
  with pytest.raises(validation.ConfigError, match=match):
    # The checkpoint does not exist: the flag check must come first.
    predict.run(_load("demo"), str(tmp_path / "no_checkpoint"), [],
                str(tmp_path / "out"), **kwargs)


def test_cli_missing_dataset_root_is_one_line(tmp_path):
  """A dataset error through main: one line naming the field, no traceback."""
  missing = str(tmp_path / "no_such_hico")
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path / 'w'}",
                 f"--config.dataset.root={missing}", "--config.mode=train")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert (f"error: config.dataset.root='{missing}' does not exist"
          in result.stderr)


def test_load_config_overrides_parse_as_on_the_command_line(tmp_path,
                                                             monkeypatch):
  monkeypatch.chdir(tmp_path)  # An ablation loads configs/uv.py by path.
  path = os.path.join(ROOT, "configs", "ablations", "table5_none.py")
  config = files.load_config(path, [
      "model.d_model=32", "dataset.train_short_sides=(160, 192)",
      "init.allow_random=false", "model.dtype=bfloat16", "loss.cost_bbox=2"])
  assert config.model.d_model == 32 and isinstance(config.model.d_model, int)
  assert config.dataset.train_short_sides == (160, 192)
  assert config.init.allow_random is False
  assert config.model.dtype == "bfloat16"
  assert config.loss.cost_bbox == 2.0
  assert isinstance(config.loss.cost_bbox, float)
  assert config.dataset.zero_shot_split == "uv"  # From configs/uv.py.
  assert config.is_locked
  demo_path = os.path.join(ROOT, "configs", "demo.py")
  with pytest.raises(ValueError, match="roi_size"):
    files.load_config(demo_path, ["model.roi_sz=3"])
  with pytest.raises(ValueError, match="d_model"):
    files.load_config(demo_path, ["model.d_model=abc"])
  with pytest.raises(FileNotFoundError, match="nope.py"):
    files.load_config(os.path.join(ROOT, "configs", "nope.py"))
