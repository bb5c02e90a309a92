"""glibc malloc keeps the memory XLA:CPU frees, so steps stop faulting it in.

XLA:CPU takes a step's buffers from glibc's malloc: hundreds of MB at
640x640, batch 2, in the paper config. By default malloc serves each block
above its mmap threshold (128 KiB, rising to at most 32 MiB) with a fresh
`mmap` and unmaps it on free, and gives a heap's free top back to the system
past 128 KiB. Every step then faults its memory in again, 4 KiB at a time
(hundreds of thousands of minor page faults per paper step, which
benchmarks/train_step.py prints), and how long that takes depends on what
else the kernel is doing.

`keep_freed_memory()` sets, through glibc's `mallopt`, M_MMAP_MAX = 0 (every
block comes from a heap; a thread's heap that cannot hold a block passes it to
the main heap), M_TRIM_THRESHOLD = 2 GiB (freed memory stays mapped for the
next step) and M_ARENA_MAX = 1 (one heap: memory freed by one XLA thread is
reused by another). The process then keeps its peak heap mapped, which the
next step needs anyway. It changes where memory comes from, not what is
computed.

`train.startup.started` (every mode of `ki2hoi_jax.main`), the synthetic
CLIP and detector pretraining CLIs and the speed benchmarks call it with
JAX's backend: only on the CPU does it set anything (on a GPU or TPU the
device buffers do not come from malloc). Off glibc it does nothing.
"""

import ctypes
import ctypes.util
from typing import Dict

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
SETTINGS: Dict[str, int] = {
    "M_MMAP_MAX": 0,
    "M_TRIM_THRESHOLD": 2**31 - 1,  # mallopt takes an int.
    "M_ARENA_MAX": 1,
}
_PARAMETERS = {"M_MMAP_MAX": _M_MMAP_MAX, "M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD,
               "M_ARENA_MAX": _M_ARENA_MAX}
_applied = False


def _glibc():
  """glibc as a ctypes library, or None off glibc."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc,
                                                              "mallopt"):
    return None  # musl, macOS: no mallopt with these parameters.
  return libc


def keep_freed_memory(backend: str = "cpu") -> bool:
  """Sets `SETTINGS` with mallopt (module docstring); True when set.

  Args:
    backend: where JAX computes (`jax.default_backend()`): nothing is set
      unless it is 'cpu'.

  Idempotent. The earlier in a process, the better: M_ARENA_MAX only binds
  threads that have not allocated yet (the rest takes effect at any time).

  Raises:
    OSError: glibc refused a setting (mallopt returned 0).
  """
  global _applied
  if _applied:
    return True
  if backend != "cpu":
    return False
  libc = _glibc()
  if libc is None:
    return False
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.mallopt.restype = ctypes.c_int
  for name, value in SETTINGS.items():
    if libc.mallopt(_PARAMETERS[name], value) != 1:
      raise OSError(f"glibc mallopt({name}, {value}) failed")
  _applied = True
  return True


def is_set() -> bool:
  """Whether `keep_freed_memory` has set the settings in this process."""
  return _applied
