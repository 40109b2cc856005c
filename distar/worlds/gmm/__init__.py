"""The embedded world ("gmm"): a conditional Gaussian mixture with an exact reference denoiser.

Its config section and preset are :mod:`distar.config.gmm` (torch-free); ``world`` builds it;
``mixture``, ``nets``, ``stage0``, ``rewards``, ``metrics``, ``eval`` and ``plot`` are its parts."""
