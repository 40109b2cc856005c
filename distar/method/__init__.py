"""The method layer: DI* itself -- the losses as pure functions (``losses``), the noise-level
distributions and weightings (``sigmas``) and the step that applies them to a world's networks
(``di_star``: the assistant and generator updates the loop calls)."""
