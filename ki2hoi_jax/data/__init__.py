"""Datasets: metadata, synthetic data, annotation reading and input pipelines."""
