"""The text-to-image worlds ``sd15`` and ``sdxl`` (diffusers + transformers + peft).

Their config sections and presets (``sd15``, ``sdxl``, ``sd15-tiny``, ``sdxl-tiny``) are
:mod:`distar.config.sd` (torch-free); ``world`` builds them from the shared blocks in
:mod:`distar.t2i`; ``loading`` is the checked loading of an SD pipeline's local folders;
``tiny_pipelines`` writes tiny random pipelines for tests and laptops."""
