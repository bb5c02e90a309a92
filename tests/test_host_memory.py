"""Tests of host_memory: the GLIBC_TUNABLES value and the one re-execution."""

import os
import platform
import subprocess
import sys

import pytest

from ki2hoi_jax import host_memory

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("current, expected", [
    (None, "glibc.malloc.hugetlb=1"),
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.trim_threshold=1024",
     "glibc.malloc.trim_threshold=1024:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", None),  # The user's choice stands.
    ("glibc.malloc.mmap_max=0:glibc.malloc.hugetlb=2", None),
    ("glibc.malloc.hugetlb_x=1", "glibc.malloc.hugetlb_x=1:"
     "glibc.malloc.hugetlb=1"),  # Only the exact name counts.
])
def test_tunables_with_huge_pages(current, expected):
  assert host_memory.tunables_with_huge_pages(current) == expected


def _recent_glibc() -> bool:
  libc, version = platform.libc_ver()
  return (sys.platform.startswith("linux") and libc == "glibc" and
          tuple(int(v) for v in version.split(".")[:2]) >= (2, 35))


@pytest.mark.skipif(not _recent_glibc(), reason="needs Linux, glibc >= 2.35")
@pytest.mark.parametrize("mode, expected", [
    ("always [madvise] never\n", True),
    ("[always] madvise never\n", True),
    ("always madvise [never]\n", False),
])
def test_huge_pages_available_reads_the_thp_mode(tmp_path, mode, expected):
  path = tmp_path / "enabled"
  path.write_text(mode)
  assert host_memory.huge_pages_available(str(path)) is expected
  assert host_memory.huge_pages_available(str(tmp_path / "absent")) is False


_CHILD = """
import os, sys
from ki2hoi_jax import host_memory
print("start", os.getpid(), flush=True)
host_memory.reexec_with_huge_pages()
print("args", sys.argv[1:], os.environ.get("GLIBC_TUNABLES"), os.getpid())
"""


def _run_child(tmp_path, env_tunables):
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = dict(os.environ, PYTHONPATH=_REPO)
  env.pop("GLIBC_TUNABLES", None)
  if env_tunables is not None:
    env["GLIBC_TUNABLES"] = env_tunables
  out = subprocess.run([sys.executable, "-u", str(script), "a", "--b=1"],
                       env=env, capture_output=True, text=True, check=True,
                       timeout=60).stdout.split("\n")
  return [line.split(" ", 1) for line in out if line]


def test_reexec_adds_the_tunable_once_and_keeps_arguments(tmp_path):
  lines = _run_child(tmp_path, "glibc.malloc.trim_threshold=4096")
  if not host_memory.huge_pages_available():
    assert [k for k, _ in lines] == ["start", "args"]  # No re-execution.
    return
  # Started twice (the second time with the tunable), same PID, and the
  # arguments and the user's other tunable survive.
  assert [k for k, _ in lines] == ["start", "start", "args"]
  pid = lines[0][1]
  assert lines[1][1] == pid
  assert lines[2][1] == ("['a', '--b=1'] glibc.malloc.trim_threshold=4096:"
                         f"glibc.malloc.hugetlb=1 {pid}")


def test_reexec_keeps_a_user_setting(tmp_path):
  lines = _run_child(tmp_path, "glibc.malloc.hugetlb=0")
  assert [k for k, _ in lines] == ["start", "args"]
  assert lines[1][1].startswith("['a', '--b=1'] glibc.malloc.hugetlb=0 ")
