"""Converters from public PyTorch checkpoints (OpenAI/transformers CLIP, DETR-R50) to Flax."""
