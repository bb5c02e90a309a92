r"""Zero-shot HICO-DET: Unseen objects (12 objects and their 100 HOIs unseen).

  python -m ki2hoi_jax.main --config=configs/uo.py --workdir=/tmp/uo \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.zero_shot_split = "uo"
  return config
