"""KI2HOI network modules (Flax linen); see `ki2hoi.py` for the top module."""
