"""The rectified-flow worlds ``sd35`` (Stable Diffusion 3.5) and ``flux`` (FLUX.1): their sections
and presets are :mod:`distar.config.flow` (torch-free); ``world`` builds them from the shared
blocks in :mod:`distar.t2i` (text encoders, the flow denoiser, LoRA) and
:mod:`distar.worlds.text_image`; ``loading`` reads the user's diffusers folders;
``tiny_pipelines`` writes tiny random ones for tests and laptops; ``footprint`` says what they cost
a GPU (the planner's sizes and estimates)."""
