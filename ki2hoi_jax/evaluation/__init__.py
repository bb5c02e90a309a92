"""Post-processing and evaluation (HICO-DET mAP, V-COCO role AP).

Modules (imported explicitly; this package imports nothing so that the
evaluator CLIs start without JAX):

* `postprocess`: model outputs -> GEN-VLKT predictions entries (score fusion,
  top-k, triplet NMS) and predictions-file I/O.
* `hico`: HICO-DET mAP (Default / Known-object / zero-shot) and its CLI
  `python -m ki2hoi_jax.evaluation.hico`; `hico_inputs`: test records and
  prediction entries read into flat arrays, with the input checks;
  `hico_ap`: matching and per-class AP over those arrays.
* `vcoco`: V-COCO role AP entry point, predictions files and the CLI
  `python -m ki2hoi_jax.evaluation.vcoco`; `vcoco_ap`: role classes, matching
  and role AP.
* `boxes`: +1-pixel IoU and box conversions shared by the evaluators.
"""
