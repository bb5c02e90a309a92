r"""Table VI, two verb extraction decoder layers.

Paper Table VI varies the depth of the verb extraction decoder. Split: unseen
verbs (configs/uv.py).

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table6_verb_layers_2.py \
      --workdir=/tmp/table6_verb_layers_2 \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  config.model.verb_decoder_layers = 2
  return config
