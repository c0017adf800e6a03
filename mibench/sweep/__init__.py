"""Sweeps: a YAML spec (models x tasks x methods x seeds, both tracks) expanded into runs that Ray schedules.

* :mod:`mibench.sweep.spec`: the versioned spec schema and its loader (one named error per bad field);
* :mod:`mibench.sweep.expand`: the spec -> concrete :class:`~mibench.sweep.expand.Run` s, with the impossible
  combinations (a method's levels and ablations, a task without the variable, a planted model's other tasks)
  skipped and named;
* :mod:`mibench.sweep.resume`: which runs already have a record that the run would reproduce;
* :mod:`mibench.sweep.execute`: the single place that turns one run into one evaluation and its record;
* :mod:`mibench.sweep.runner`: scheduling on Ray (resources per run, retries, Ctrl-C) and the outcomes;
* :mod:`mibench.sweep.summary`: the expanded matrix and the end-of-sweep table.

Nothing here imports Ray or torch at import time: ``mibench ls`` and ``mibench --help`` stay light.
"""
