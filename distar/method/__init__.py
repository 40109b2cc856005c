"""The method layer: DI* itself -- the losses as pure functions (``losses``), the noise-level
distributions and weightings (``sigmas``), the step that applies them to a world's networks
(``di_star``: the assistant and generator updates and their optimisers), its random draws
(``draws``), what it needs of a world (``contract``), what the loop calls of a method
(``steps``), and rectified flow seen as EDM (``flow``: velocity networks as the denoisers the
losses call)."""
