"""Trainers of the artefacts that mibench ships: a repository tool, not part of the installed library.

Each module is a command run from the repository root (``python -m training.<module> --help``):

* :mod:`training.zoo` -- the embedded task models (``mibench/zoo/models/``);
* :mod:`training.planted` -- the planted-circuit models, their ground truth and the proofs that the ground
  truth is real (``mibench/zoo/known_circuits/``);
* :mod:`training.sae` -- the residual-stream SAEs of the zoo models (``mibench/zoo/saes/``);
* :mod:`training.vocab` -- the word-level tokenizer the zoo and planted models are trained with.

Why a separate package: training code needs the whole library (engine, tasks, models) while nothing in the
library needs training code. Keeping it outside ``mibench`` makes that dependency one-way (a test checks
that no runtime module imports ``training``), keeps it out of the wheel, and lets a reader find everything
that *produces* shipped files in one place.
"""
