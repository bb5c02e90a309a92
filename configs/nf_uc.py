r"""Zero-shot HICO-DET: Non-rare-first unseen combinations (120 non-rare HOIs unseen).

  python -m ki2hoi_jax.main --config=configs/nf_uc.py --workdir=/tmp/nf_uc \
      --config.dataset.root=/data/hico_20160224_det
"""

from ki2hoi_jax.config_lib import base


def get_config():
  config = base.get_config()
  config.dataset.zero_shot_split = "nf_uc"
  return config
