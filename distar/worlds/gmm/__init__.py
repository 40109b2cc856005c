"""The embedded world ("gmm"): a conditional Gaussian mixture with an exact reference denoiser.

``world_config`` (torch-free) holds its config section and preset; ``world`` builds it;
``mixture``, ``nets``, ``stage0``, ``rewards``, ``metrics``, ``eval`` and ``plot`` are its parts."""
