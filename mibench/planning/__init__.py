"""Memory planning: will a run fit, and with which batch size?

:mod:`mibench.planning.configs` resolves a model name to its Hugging Face configuration only (never weights;
MIB's four models ship as published ``config.json`` files), :mod:`mibench.planning.memory` counts the peak
memory of each phase of a run from the tensors the engine allocates, :mod:`mibench.planning.budget` reads
budgets and the allocator headroom, and :mod:`mibench.planning.run` plans one ``mibench evaluate`` run
(``mibench plan``, ``--batch-size auto``).
"""
