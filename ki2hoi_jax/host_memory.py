"""Transparent huge pages for host memory: entry points re-execute once.

XLA:CPU takes the buffers of a step (hundreds of MB at 640x640, batch 2)
from glibc's malloc, which serves blocks that large with fresh `mmap`s and
unmaps them when they are freed, so every step faults its memory in again in
4 KiB pages: about 450K minor page faults per paper-config train step at
640x640 and 900K at 800x1200 (benchmarks/train_step.py --breakdown prints
the count). glibc >= 2.35 has malloc ask for transparent huge pages (2 MiB)
when the tunable `glibc.malloc.hugetlb=1` is set, which cuts them to 2-4K
per step. What that saves depends on the host's page-fault cost: on one
2-core machine of this project the step went from 3.69 to 2.59 s at 640x640
and from 7.93 to 6.07 s at 800x1200; on another the step did not change
(within its noise) while the PyTorch floor gained 7 %. glibc reads tunables
only when a process starts, so the command-line entry points
(`ki2hoi_jax.main`, `ki2hoi_jax.clip.pretrain`, the train-step benchmarks)
call `reexec_with_huge_pages()` before anything else: it re-executes the
same command line once with the tunable added to `GLIBC_TUNABLES` (same
PID, same arguments); scripts/test.sh sets it for pytest.

It changes where memory comes from, not what is computed: outputs are the
same. On a GPU the device buffers do not come from malloc, so there it
affects host work only (input pipeline, matching). Nothing happens where it
cannot help: not Linux with glibc >= 2.35, or transparent huge pages set to
`never`. A `glibc.malloc.hugetlb` the user set in `GLIBC_TUNABLES` is kept
as it is (`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns this off).
"""

import os
import platform
import sys
from typing import Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def tunables_with_huge_pages(tunables: Optional[str]) -> Optional[str]:
  """`GLIBC_TUNABLES` with `glibc.malloc.hugetlb=1` added; None: keep it.

  Args:
    tunables: the current value of GLIBC_TUNABLES (None: unset), a
      colon-separated list of name=value.

  Returns:
    The new value, or None when `tunables` already sets glibc.malloc.hugetlb
    (to any value: the user's choice stands).
  """
  entries = [e for e in (tunables or "").split(":") if e]
  if any(e.split("=")[0] == TUNABLE for e in entries):
    return None
  return ":".join(entries + [f"{TUNABLE}=1"])


def huge_pages_available(thp_mode_file: str = _THP_MODE_FILE) -> bool:
  """True on Linux with glibc >= 2.35 and transparent huge pages not `never`."""
  if not sys.platform.startswith("linux"):
    return False
  libc, version = platform.libc_ver()
  try:
    major_minor = tuple(int(v) for v in version.split(".")[:2])
  except ValueError:
    return False
  if libc != "glibc" or major_minor < (2, 35):
    return False
  try:
    with open(thp_mode_file) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def reexec_with_huge_pages(environ: Mapping[str, str] = os.environ) -> None:
  """Re-executes this process's command line with the tunable (see module).

  Call it first in a `__main__` block, before threads start or output is
  written. Returns without doing anything when the tunable is already set or
  huge pages are unavailable; otherwise does not return.
  """
  tunables = tunables_with_huge_pages(environ.get("GLIBC_TUNABLES"))
  if tunables is None or not huge_pages_available():
    return
  env = dict(environ, GLIBC_TUNABLES=tunables)
  sys.stdout.flush()
  sys.stderr.flush()
  # sys.orig_argv keeps the interpreter's own options, `-m module` included.
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
