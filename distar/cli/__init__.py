"""The cli layer: the library's commands, ``python -m distar.cli.train``, ``.evaluate``,
``.export`` and ``.plan``; each is argparse, the typed config, and one call into the layers
below."""
