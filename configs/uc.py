r"""Zero-shot HICO-DET: Unseen combinations, HOICLIP's uc0 (120 HOIs unseen).

  python -m ki2hoi_jax.main --config=configs/uc.py --workdir=/tmp/uc \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.zero_shot_split = "uc"
  return config
