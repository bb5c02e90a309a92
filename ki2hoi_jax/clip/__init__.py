"""CLIP in Flax: model, BPE tokenizer and frozen text embeddings."""
