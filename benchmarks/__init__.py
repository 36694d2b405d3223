"""Benchmarks of gemini_batch_magic: ``python -m benchmarks --help``.

Layout (add a figure by writing one function in a new ``fig_*.py`` and importing it in
:mod:`benchmarks.figures`):

* :mod:`benchmarks.registry`: the ``@figure`` decorator, :class:`~benchmarks.registry.Context`
  and :class:`~benchmarks.registry.Measurement`.
* :mod:`benchmarks.data`: deterministic, seeded prompts and responses files.
* :mod:`benchmarks.report`: the table printer and the JSON writer.
* :mod:`benchmarks.fig_build` (figure 1) and :mod:`benchmarks.fig_parse` (figure 2).
* :mod:`benchmarks.run`: the command line (``python -m benchmarks``).
"""
