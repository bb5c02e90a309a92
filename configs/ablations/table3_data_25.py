r"""Table III, 25% of the training images.

Paper Table III asks how the detector does with less training data (GEN-VLKT
and HOICLIP's data-efficiency setting, fully supervised HICO-DET,
configs/default.py). `dataset.train_fraction` keeps a fixed random subset
(seeded by `seed`, data/splits.py).

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table3_data_25.py \
      --workdir=/tmp/table3_data_25 \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

default = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "default.py"))


def get_config():
  config = default.get_config()
  config.dataset.train_fraction = 0.25
  return config
