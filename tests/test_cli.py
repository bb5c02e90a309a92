"""The command-line pattern of every entry point (ki2hoi_jax/cli.py)."""

import importlib

from absl import flags
import pytest

from ki2hoi_jax import cli


def _define_flags(flag_values):
  flags.DEFINE_string("out", None, "Output path.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_integer("steps", 3, "Steps.", flag_values=flag_values)


def test_flags_live_in_a_flag_values_per_call():
  a = cli.parse_flags(["prog", "--out", "x", "--steps=5"], _define_flags)
  # The same names again (another module's --out) raise no DuplicateFlagError
  # and see nothing of the first call.
  b = cli.parse_flags(["prog", "--out=y"], _define_flags)
  assert (a.out, a.steps, b.out, b.steps) == ("x", 5, "y", 3)
  assert "out" not in flags.FLAGS


def test_arguments_help_and_errors(capsys):
  args, rest = cli.parse_flags_and_arguments(
      ["prog", "a.jpg", "--out=o", "b.jpg"], _define_flags)
  assert (args.out, rest) == ("o", ["a.jpg", "b.jpg"])
  with pytest.raises(SystemExit) as exit_info:
    cli.parse_flags(["prog", "--help"], _define_flags, "What it does.\n")
  assert exit_info.value.code == 0
  printed = capsys.readouterr().out
  assert printed.startswith("What it does.\n")
  assert "--out: Output path." in printed and "--steps: Steps." in printed
  for argv, named in ((["prog"], "--out"),
                      (["prog", "--out=o", "--stepz=1"], "stepz"),
                      (["prog", "--out=o", "--steps=x"], "--steps"),
                      (["prog", "--out=o", "extra"], "unexpected arguments")):
    with pytest.raises(SystemExit) as exit_info:
      cli.parse_flags(argv, _define_flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and named in error, argv


@pytest.mark.parametrize("module_name", [
    "ki2hoi_jax.clip.pretrain", "ki2hoi_jax.data.synthetic",
    "ki2hoi_jax.data.tfds_builder", "ki2hoi_jax.evaluation.hico",
    "ki2hoi_jax.evaluation.vcoco", "ki2hoi_jax.inference.predict",
    "ki2hoi_jax.weights.convert_clip", "ki2hoi_jax.weights.convert_detr",
    "ki2hoi_jax.train.pretrain_detector"])
def test_every_entry_point_helps_in_one_process(module_name, capsys):
  """All in one process: no flag of one module clashes with another's."""
  module = importlib.import_module(module_name)
  with pytest.raises(SystemExit) as exit_info:
    module.main(["prog", "--help"])
  assert exit_info.value.code == 0
  printed = capsys.readouterr().out
  assert printed.startswith(module.__doc__.strip("\n").split("\n")[0])
  assert "help: Show this help" in printed and printed.count("\n  --") >= 3
  assert callable(module.entry_point)  # pyproject.toml's console script.
