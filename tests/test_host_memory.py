"""host_memory: glibc keeps freed memory mapped; what is computed is unchanged.

Each case runs in a fresh interpreter, since mallopt settings last for the
process.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                            reason="mallopt settings are glibc's")

# Allocates and frees a 64 MiB block three times (minor page faults of each
# round), then a jitted conv + matmul gradient at a size whose buffers pass
# malloc's mmap threshold, twice (its outputs).
_PROBE = r"""
import json, resource, sys
import numpy as np
from ki2hoi_jax import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == "1" else False
import jax, jax.numpy as jnp

def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

rounds = []
for _ in range(3):
  f0 = faults()
  block = np.ones(64 << 20, np.uint8)
  del block
  rounds.append(faults() - f0)

def loss(w, x):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
  return jnp.sum(jnp.tanh(y @ jnp.ones((y.shape[-1], 8))))

x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 192, 192))
w = jax.random.normal(jax.random.PRNGKey(1), (16, 16, 3, 3)) * 0.1
step = jax.jit(jax.value_and_grad(loss))
outputs = [step(w, x) for _ in range(2)]
print(json.dumps({"applied": applied, "rounds": rounds,
                  "loss": [float(v) for v, _ in outputs],
                  "grad": np.asarray(outputs[-1][1]).ravel()[:64].tolist()}))
"""


def _probe(keep: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROBE, "1" if keep else "0"],
                       cwd=_REPO, env=env, capture_output=True, text=True,
                       check=True, timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


@_glibc
def test_freed_memory_is_reused_and_outputs_are_unchanged():
  default, kept = _probe(False), _probe(True)
  assert not default["applied"] and kept["applied"]
  # glibc's defaults unmap the freed 64 MiB and fault it in again (at least
  # one fault per 2 MiB huge page, 32); kept, the later rounds reuse it.
  assert min(default["rounds"][1:]) >= 32
  assert max(kept["rounds"][1:]) <= 4
  # Where memory comes from does not change what is computed: equal bits.
  assert kept["loss"] == default["loss"]
  assert kept["grad"] == default["grad"]


def test_keep_freed_memory_sets_only_on_the_cpu_once():
  probe = ("from ki2hoi_jax import host_memory as h; a = h.is_set(); "
           "g = h.keep_freed_memory('gpu'); b = h.keep_freed_memory('cpu'); "
           "c = h.keep_freed_memory('cpu'); print(a, g, b, c, h.is_set())")
  out = subprocess.run([sys.executable, "-c", probe], cwd=_REPO,
                       capture_output=True, text=True, check=True).stdout
  on_glibc = str(platform.libc_ver()[0] == "glibc")
  assert out.split() == ["False", "False", on_glibc, on_glibc, on_glibc]
