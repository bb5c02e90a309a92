"""Config files by path: the one loader of `get_config()` outside `--config`.

A config file is a Python file with `get_config()` returning the run's
`ml_collections.ConfigDict` (configs/*.py, `ki2hoi_jax/config_lib/base.py`).
Entry points read theirs with `--config=path` (ml_collections' `config_flags`);
everything else that reads a config file (weight converters, CLIP
pretraining, benchmarks, tests) calls `load_config`, which goes through the
same `config_flags` parser, so a `field=value` override means exactly what
`--config.field=value` means on the command line: the value is parsed by the
type of the field (bool, int, float, str, tuple, ...), an unknown field is an
error naming the closest one, and the returned config is locked (no new
fields).

A config file that builds on another one loads it by path, relative to
itself, with `load_module` (configs/ablations/*.py extend configs/uv.py), so
it works from any working directory and through either loader.
"""

import importlib.util
import os
import re
import types
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags


def load_module(path: str) -> types.ModuleType:
  """The module of the Python file at `path` (executed anew on each call).

  Args:
    path: a `.py` file, absolute or relative to the working directory.

  Returns:
    The module; it is not added to `sys.modules`.

  Raises:
    FileNotFoundError: no such file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found")
  stem = os.path.splitext(os.path.abspath(path))[0]
  name = "_ki2hoi_config" + re.sub(r"\W", "_", stem)
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str, overrides: Sequence[str] = ()
                ) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, with `field=value` overrides applied.

  Args:
    path: the config file (`path:argument` passes `argument` to
      `get_config`, as `--config=path:argument` does).
    overrides: 'model.d_model=64'-style assignments, applied in order, each
      parsed as `--config.model.d_model=64` would be.

  Returns:
    The config, locked.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file does not load, or a bad override (the message names
      the field).
  """
  if not os.path.isfile(path.split(":", 1)[0]):
    raise FileNotFoundError(f"config file {path} not found")
  argv = ["load_config", f"--config={path}"] + [
      f"--config.{assignment}" for assignment in overrides]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", path, "Config file.", flag_values=flag_values,
      lock_config=True, sys_argv=argv)
  try:
    flag_values(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    message = str(e.args[0] if e.args else e)
    if isinstance(e, (AttributeError, KeyError)):  # A quoted repr.
      message = message.strip("'\"").replace("\\'", "'")
    message = message.replace("\\n", " ").replace("\n", " ")
    raise ValueError(f"config file {path}: {message}") from None
  return holder.value
