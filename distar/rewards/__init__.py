"""Reward models that training differentiates through (PickScore and the other CLIP-family
scorers). Below the worlds and the evaluation harness: importing this package pulls in neither
the evaluation CLI, the sweep layer nor MLflow; transformers loads only when a model is built."""
