r"""Table IV row (c): + Ho-Pair Encoder.

Paper Table IV adds the components one at a time. Split: unseen verbs
(configs/uv.py; the `files.load_module` line names the paper config the row
modifies, change it for another split).

Row (b) with the Ho-Pair Encoder in place of DETR's encoder; no verb feature
learning yet.

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table4_c_ho_pair_encoder.py \
      --workdir=/tmp/table4_c_ho_pair_encoder \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  config.model.verb_decoder = False
  return config
