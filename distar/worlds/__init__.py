"""Worlds: everything experiment-specific the world-agnostic training loop needs.

``base`` is the protocol every world implements and the registry of builders; each world's
torch-free config (sections and presets) is in :mod:`distar.config`; ``builders`` imports each
world's builder and builds one by name. One package per world: ``gmm`` (the embedded world) and
``sd`` (Stable Diffusion 1.5 / XL).
"""
