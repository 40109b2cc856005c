"""The text-to-image worlds ``sd15`` and ``sdxl`` (diffusers + transformers + peft).

``config`` (torch-free) holds their config sections and presets (``sd15``, ``sdxl``,
``sd15-tiny``, ``sdxl-tiny``); ``world`` builds them; ``edm`` is the EDM view of a DDPM UNet and
the one-step generator map; ``text`` the prompt conditions; ``loading`` the checked loading of
local weights; ``tiny`` writes tiny random components for tests and laptops."""
