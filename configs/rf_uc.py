r"""Zero-shot HICO-DET: Rare-first unseen combinations (120 rare HOIs unseen).

  python -m ki2hoi_jax.main --config=configs/rf_uc.py --workdir=/tmp/rf_uc \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.zero_shot_split = "rf_uc"
  return config
