"""The config layer (the bottom one): the one typed config tree (``tree``), torch-free, and
everything it is made of -- the section building blocks and registries (``sections``), the
allowed values of the library's fields (``choices``), each world's sections and presets (``gmm``,
``sd``, collected by ``worlds``), the benchmark catalogue (``benchmarks``), the pip extras
(``extras``), the paper's tables and its translation into config values (``paper``), and the
keys as attributes (``keys``: code outside this package names a config key through ``K``)."""
