"""The config layer (the bottom one): the one typed config tree (``tree``), torch-free, and
everything it is made of -- the section building blocks and registries (``sections``), each world's
sections and presets (``gmm``, ``sd``, collected by ``worlds``), the benchmark catalogue
(``benchmarks``), the pip extras (``extras``) and the paper's tables and its translation into config
values (``paper``). Config keys are spelled as strings only in this package."""
