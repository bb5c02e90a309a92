r"""Table IV row (a): the baseline without CLIP knowledge.

Paper Table IV adds the components one at a time. Split: unseen verbs
(configs/uv.py; the `files.load_module` line names the paper config the row
modifies, change it for another split).

No CLIP anywhere the detector learns from: DETR's transformer encoder instead
of the Ho-Pair Encoder, no V_sp cross-attention in the interaction decoder,
learned linear interaction and object classifiers (the object head is not
text-initialised), no verb feature learning, no L_re. The frozen CLIP image
tower still runs (its outputs are unused).

Evaluation: a linear head scores its training classes only
(`vocabulary.evaluation_vocabulary`): the unseen classes get no candidate, so
their AP, and mAP_unseen, are 0 by construction; compare mAP_seen.

  python -m ki2hoi_jax.main \
      --config=configs/ablations/table4_a_baseline.py \
      --workdir=/tmp/table4_a_baseline \
      --config.dataset.root=/data/hico_20160224_det
"""

import os

from ki2hoi_jax.config_lib import files

uv = files.load_module(
    os.path.join(os.path.dirname(__file__), "..", "uv.py"))


def get_config():
  config = uv.get_config()
  config.model.encoder_type = "detr"
  config.model.clip_cross_attention = False
  config.model.classifier = "linear"
  config.model.verb_decoder = False
  config.loss.reconstruction = "none"
  return config
