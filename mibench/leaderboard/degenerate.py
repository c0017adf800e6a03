"""Degenerate points of the circuit track, read from what a record already holds.

Two cases make a number look like information when it is not:

* **Empty sizes.** A size whose circuit keeps no edge under either ranking (``int(k * N)`` rounds to 0, e.g.
  0.1 % and 0.2 % of 496 edges) evaluates the empty circuit for *every* method: ``f = 0`` there by
  definition, so that point of the curve cannot separate methods. The column says which sizes those are.
* **Nothing recovered.** A curve whose faithfulness is below :data:`NOTHING` in size at every size short of
  the whole model (its circuits are empty or inert) is within ``0.75 * NOTHING`` of the closed-form value of
  ``f = (0, ..., 0, 1)``: CPR ``w_10 = 0.25`` and CMD ``sum(w) - 0.25 = 0.749``, the value any method with
  empty circuits gets, random scores included. Such a cell is marked: it ranks the granularity of the graph
  (how few items the small sizes keep) rather than the method.
* **No measurable effect.** Faithfulness divides by ``m(full) - m(empty)``. When that difference is within
  :data:`EFFECT_SIGMAS` bootstrap standard errors of zero, the model does not measurably do the task on the
  evaluated examples and every faithfulness value is noise over noise. Records carry that standard error
  (``effect_stderr``) from this version on; older records are not judged.
"""

from __future__ import annotations

from mibench.results.record import CircuitRecord, CurveRecord

#: |f| below this at a size counts as nothing recovered there (1 % of the full model's effect).
NOTHING = 0.01
#: An effect ``|m(full) - m(empty)|`` below this many bootstrap standard errors is not measurable.
EFFECT_SIGMAS = 3.0


def empty_fractions(record: CircuitRecord) -> tuple[float, ...]:
    """The circuit sizes (fractions) at which both rankings' circuits keep no edge."""
    signed, absolute = record.metrics.signed, record.metrics.absolute
    return tuple(fraction for fraction, a, b in zip(signed.fractions, signed.edge_counts, absolute.edge_counts)
                 if a == 0 and b == 0)


def recovers_nothing(curve: CurveRecord) -> bool:
    """True when ``|f| < NOTHING`` at every size below the whole model."""
    return len(curve.faithfulness) > 1 and all(abs(f) < NOTHING for f in curve.faithfulness[:-1])


def inert_metrics(record: CircuitRecord) -> tuple[str, ...]:
    """The metrics whose curve recovers nothing: ``CPR`` (signed ranking) and/or ``CMD`` (absolute ranking)."""
    metrics = record.metrics
    return tuple(name for name, curve in (("CPR", metrics.signed), ("CMD", metrics.absolute))
                 if recovers_nothing(curve))


def effect_unmeasurable(record: CircuitRecord) -> bool:
    """True when ``|m(full) - m(empty)| < EFFECT_SIGMAS * effect_stderr`` (False when no error was recorded)."""
    metrics = record.metrics
    if metrics.effect_stderr is None:
        return False
    effect = abs(metrics.full_logit_difference - metrics.empty_logit_difference)
    return effect < EFFECT_SIGMAS * metrics.effect_stderr
