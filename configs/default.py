r"""Fully supervised HICO-DET (all 600 HOIs seen).

  python -m ki2hoi_jax.main --config=configs/default.py --workdir=/tmp/default \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  return base.get_config()
