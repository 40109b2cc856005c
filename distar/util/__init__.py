"""The util layer: small helpers with no training in them -- name registries (``registry``), the
one-line refusals every entry point runs in (``refusals``), the file-locked cache
(``cache``), image grids (``images``)."""
