"""Benchmark protocol of the paper's EDSR claims (``tools/benchmark.py``).

Modules: :mod:`.presets` (protocols and methods), :mod:`.configs` (Runner
configs built from the repo's configs), :mod:`.pipeline` (train, test,
complexity, controls, step times), :mod:`.benchmark` (the stages),
:mod:`.targets` / :mod:`.report` / :mod:`.figures` (tables, checks, plots),
:mod:`.data` (scikit-image photographs in SR layout), :mod:`.distribution`
(paper Fig. 1 / Fig. 3), :mod:`.hooks` (BenchRecorderHook). Nothing is
imported here, so ``import odm_mm.bench.presets`` needs no OpenMMLab stack.
"""
