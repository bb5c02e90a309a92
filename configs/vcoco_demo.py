r"""Tiny model on a synthetic V-COCO-format dataset: minutes on 2 CPU cores.

The V-COCO counterpart of configs/demo.py (same tiny model; the detector
trains from scratch, 30 epochs): generates the synthetic V-COCO dataset
(`trainval_vcoco.json`, `test_vcoco.json`, COCO 2014 image folders) into the
workdir, trains with the 29 verb-class prompts, evaluates role AP (scenario
1 and 2) and predicts:

  python -m ki2hoi_jax.main --config=configs/vcoco_demo.py --workdir=/tmp/vd
"""

import os

from ki2hoi_jax.config_lib import files

demo = files.load_module(
    os.path.join(os.path.dirname(__file__), "demo.py"))


def get_config():
  config = demo.get_config()
  config.dataset.name = "vcoco"
  config.dataset.zero_shot_split = ""  # V-COCO has no zero-shot splits.
  config.dataset.synthetic_world = "basic"  # The world with V-COCO labels.
  config.model.interaction_space = "verb"  # One prompt per verb class (29).
  config.init.synthetic_clip_steps = 0  # Not zero-shot: a random CLIP.
  # The synthetic detector's corpus and classes are the HICO-format world's:
  # the detector trains from scratch here, for the schedule it had then.
  config.init.synthetic_detector_steps = 0
  config.optimizer.num_epochs = 30
  config.optimizer.lr_drop_epoch = 25
  config.inference.clip_pair_fusion = 0.0  # Every class is a training class.
  config.inference.score_fusion = "sum"  # The paper's; the demo's product serves unseen classes.
  return config
