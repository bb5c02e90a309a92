"""Command-line entry points: absl flags, parsed into a FlagValues per call.

Every command-line program of the package and of benchmarks/ follows one
pattern, so that its `main(argv)` runs as a program and can also be called
from Python (the tests) any number of times in one process:

  def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "Output path.", required=True,
                        flag_values=flag_values)

  def main(argv: Sequence[str]) -> int:  # argv[0] is the program name.
    args = cli.parse_flags(argv, define_flags, __doc__)
    ...  # args.out
    return 0

  def entry_point() -> None:  # `python -m ...` and the console script.
    cli.run(main, user_errors=(FileNotFoundError,))

  if __name__ == "__main__":
    entry_point()

The flags live in a `flags.FlagValues` of their own, never in absl's global
`flags.FLAGS`: modules whose flags share a name (`--config`, `--out`) import
together without a DuplicateFlagError, and a test's call sees no flag values
of an earlier one. `--help` prints the module docstring and the flags.

The training entry point (`python -m ki2hoi_jax.main`) is the one program on
the global FLAGS, with ml_collections' `--config` / `--config.field=value`.
A program of this pattern that takes such overrides too (inference/predict.py,
train/pretrain_detector.py, benchmarks/input_pipeline.py) defines the same
config flag on its own FlagValues (`config_flags.DEFINE_config_file(...,
flag_values=flag_values, sys_argv=argv)`); one that only takes a config
file's path loads it with `config_lib.files.load_config`.
"""

import sys
from typing import Callable, List, Optional, Sequence, Tuple, Type

from absl import app
from absl import flags


class _HelpFlag(flags.BooleanFlag):
  """`--help`: prints the program's docstring and flags, then exits 0."""

  def __init__(self, doc: str, flag_values: flags.FlagValues):
    super().__init__("help", False, "Show this help and exit.",
                     short_name="?")
    self._doc = doc
    self._flag_values = flag_values

  def parse(self, argument):
    if self._parse(argument):
      print(self._doc.strip("\n"))
      print("\nflags:")
      print(self._flag_values.get_help(include_special_flags=False))
      sys.exit(0)


def parse_flags(argv: Sequence[str],
                define_flags: Callable[[flags.FlagValues], None],
                doc: str = "") -> flags.FlagValues:
  """Parses `argv` into a new FlagValues holding the flags of `define_flags`.

  Args:
    argv: the command line, program name first (as `sys.argv`).
    define_flags: defines the program's flags on the FlagValues it is given.
    doc: what `--help` prints above the flags (the module docstring).

  Returns:
    The parsed flags (`args.out`).

  Raises:
    SystemExit: 0 after `--help`; 2 on a bad or missing flag or an argument
      that is not a flag, with the message on stderr.
  """
  args, rest = parse_flags_and_arguments(argv, define_flags, doc)
  if rest:
    _usage_error(f"unexpected arguments {rest}")
  return args


def parse_flags_and_arguments(
    argv: Sequence[str], define_flags: Callable[[flags.FlagValues], None],
    doc: str = "") -> Tuple[flags.FlagValues, List[str]]:
  """As `parse_flags`, for a program that also takes arguments.

  Returns:
    (the parsed flags, the arguments that are not flags, program name
    excluded).
  """
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  program = next(iter(flag_values.flags_by_module_dict()), __name__)
  flags.DEFINE_flag(_HelpFlag(doc, flag_values), flag_values,
                    module_name=program)
  try:
    rest = flag_values(list(argv))
  except flags.Error as e:
    _usage_error(str(e))
  return flag_values, rest[1:]


def _usage_error(message: str) -> None:
  print(f"error: {message}\nRun with --help for the flags.", file=sys.stderr)
  sys.exit(2)


def run(main: Callable[[Sequence[str]], Optional[int]],
        user_errors: Tuple[Type[BaseException], ...] = ()) -> None:
  """Runs `main(sys.argv)` as an absl program and exits with its status.

  Args:
    main: the program; returns the exit status (None: 0).
    user_errors: exceptions caused by the user's input (files, values): one
      `error: ...` line on stderr and exit status 2 instead of a traceback.
  """
  def call(argv):
    try:
      return main(argv)
    except user_errors as e:  # pylint: disable=catching-non-exception
      print(f"error: {e}", file=sys.stderr)
      return 2

  # absl's own flags (logging) keep their defaults; `main` parses the rest.
  app.run(call, flags_parser=lambda argv: (flags.FLAGS(argv[:1]), argv)[1])
