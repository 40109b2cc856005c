"""distar: post-training one-step text-to-image generators with Diff-Instruct* (DI*).

Importing it loads nothing heavy: Ray, MLflow, transformers and friends are imported by the
modules that need them (``distar.sweep``, ``distar.evaluation``), when those are used.
"""

__version__ = "0.1.0"
