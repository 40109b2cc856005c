"""Benchmark evaluation of text-to-image generators: reward/metric models, the harness that
generates and scores per prompt, summaries and MLflow tables. Heavy libraries (transformers,
open_clip, torchmetrics) are imported only when a metric is built."""
