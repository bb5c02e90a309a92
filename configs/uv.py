r"""Zero-shot HICO-DET: Unseen verbs (20 verbs and their 84 HOIs unseen).

  python -m ki2hoi_jax.main --config=configs/uv.py --workdir=/tmp/uv \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.zero_shot_split = "uv"
  return config
