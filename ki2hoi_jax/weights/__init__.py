"""Pretrained weights: converters from public PyTorch checkpoints, strict loading.

Modules: `convert_clip` (`python -m ki2hoi_jax.weights.convert_clip`: OpenAI
CLIP `.pt` or a transformers folder -> Flax msgpack), `convert_detr`
(`python -m ki2hoi_jax.weights.convert_detr`: DETR-R50 `.pth` -> Flax msgpack)
and `pretrained` (msgpack + metadata files, name/shape-checked loading into
model params, `init_from_pretrained`).
"""
