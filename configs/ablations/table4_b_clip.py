r"""Table IV row (b): baseline + CLIP knowledge.

Paper Table IV adds the components one at a time. Split: unseen verbs
(configs/uv.py; the `files.load_module` line names the paper config the row
modifies, change it for another split).

Row (a) plus the CLIP parts: V_sp cross-attention in the interaction decoder,
cosine classifiers against the CLIP text embeddings (object head
text-initialised) and L_re. Still DETR's encoder and no verb feature learning.

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table4_b_clip.py \
      --workdir=/tmp/table4_b_clip \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  config.model.encoder_type = "detr"
  config.model.verb_decoder = False
  return config
