"""The benchmark harness of ``tools/benchmark.py`` (not part of the package).

Modules: :mod:`.presets` (protocols; each method is a config file of
``configs/``), :mod:`.configs` (Runner configs: the preset's protocol around
the method's config), :mod:`.pipeline` (train, test, complexity, controls,
step times), :mod:`.benchmark` (the stages), :mod:`.targets` /
:mod:`.report` / :mod:`.figures` (tables, checks, plots), :mod:`.data`
(scikit-image photographs in SR layout), :mod:`.demo` (``make demo``:
teacher choice, worker processes, progress bars, crop comparison). What users call stays in the
package: :mod:`odm_mm.analysis.distribution` (Fig. 1 / Fig. 3),
:mod:`odm_mm.analysis.complexity`, :mod:`odm_mm.recorder`
(``QATRecorderHook``). Nothing is imported here, so
``import odm_bench.presets`` needs no OpenMMLab stack.
"""
