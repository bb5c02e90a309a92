r"""Table V, L_re = L1 (the paper's choice).

Paper Table V compares distances of the reconstruction loss L_re (GEN-VLKT's
raw form on every decoder layer, `loss.reconstruction_form` keeps its default).
Split: unseen verbs (configs/uv.py).

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table5_l1.py \
      --workdir=/tmp/table5_l1 \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  config.loss.reconstruction = "l1"
  return config
