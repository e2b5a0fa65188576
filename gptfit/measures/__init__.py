"""What a run measures: one module per measure, each a `Measure` (measures/base.py) built by its module's
`build(setup)`, and this registry, the order in which an evaluation calls them (a measure may read what an
earlier one left on the `Evaluation`: capacity the table, grammar the decoded samples).

Adding a measure: write its module (its class with `keys` and `when`, and `build`), add `build` below, and
give it tests; the evaluator (run/evaluation.py) names none of them. A stop rule (an object with
`should_stop(model, step)`, asked before each evaluation) is registered the same way, in STOP_RULES.
"""

from __future__ import annotations

from gptfit.measures import (
    attention,
    audit,
    canaries,
    capacity,
    general,
    generation,
    grammar,
    losses,
    pretraining,
    privacy,
    table,
    unlearning,
)

REGISTRY = (
    losses.build,
    general.build,
    pretraining.build,
    table.build,
    unlearning.build,
    capacity.build,
    canaries.build,
    generation.build,
    grammar.build,
    attention.build,
    privacy.build,
    audit.build,
)
# The rules that may end training early, each `(train, measures, rows) -> rule | None`.
STOP_RULES = (capacity.stop_rule,)
