r"""V-COCO with verb-space interaction classes (29 verb classes).

  python -m ki2hoi_jax.main --config=configs/vcoco.py --workdir=/tmp/vcoco \
      --config.dataset.root=/data/v-coco
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.name = "vcoco"
  config.model.interaction_space = "verb"
  return config
