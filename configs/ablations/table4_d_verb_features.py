r"""Table IV row (d): + verb feature learning (the full KI2HOI).

Paper Table IV adds the components one at a time. Split: unseen verbs
(configs/uv.py; the `files.load_module` line names the paper config the row
modifies, change it for another split).

Row (c) plus the verb extraction decoder and the per-pair V_verb retrieval: the
paper model, identical to configs/uv.py.

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table4_d_verb_features.py \
      --workdir=/tmp/table4_d_verb_features \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  return config
