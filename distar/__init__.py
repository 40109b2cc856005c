"""distar: post-training one-step text-to-image generators with Diff-Instruct* (DI*).

Importing it loads nothing heavy: Ray, MLflow, transformers and friends are imported by the
modules that need them (``distar.raytune``, ``distar.evaluation``), when those are used.
The layer order the modules obey is in the README ("Layout") and ``tests/test_layers.py``.
"""

__version__ = "0.1.0"
