"""Prediction on image files: images, the predictor, open vocabulary, drawing.

Modules: `predict` (the CLI `python -m ki2hoi_jax.inference.predict`, and
`predict_from_config` for `main`), `predictor` (a restored model bound to a
class list -> triplets), `images` (decoding and evaluation preprocessing),
`open_vocabulary` (class lists from user verbs, objects and prompts; new
object classes) and `drawing` (annotated PNGs).
"""
