"""`unlearn.*`: taking a memorized set back out of a finished run's model (gptfit/unlearning/), measured
against the same run retrained without it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from gptfit.config.checks import Checks

# The methods of gptfit/unlearning/, one module each (their registry is gptfit.unlearning.METHODS).
UNLEARN_METHODS = ("gradient_ascent", "gradient_difference", "npo", "retain", "localize")
FORGET_SETS = ("forget",)


@dataclass
class UnlearnConfig:
    """unlearn: start from a finished run's final/ model and unlearn part of its training text; every
    evaluation measures the forget set, what is retained, and the distance to a model retrained without the
    forget set (trained into data.cache_dir on first use). Off while method is null: +experiment=unlearning."""

    # gradient_ascent (ascend the forget set's loss), gradient_difference (ascend it, descend the retained
    # text's), npo (Zhang et al. 2024, against the starting model), retain (fine-tune on the retained text
    # alone: the cheap baseline), localize (zero the MLP units most attributed to the forget set, then
    # fine-tune on the retained text with them held at zero). null: off.
    method: Optional[str] = None
    # The finished run whose model unlearns (its folder). null: the run that `source` makes, trained into
    # data.cache_dir on first use and reused, as model=base's base is.
    run: Optional[str] = None
    # The overrides of the run that memorizes the forget set, where unlearn.run is null
    # (conf/experiment/unlearn_source.yaml).
    source: List[str] = field(default_factory=lambda: ["+experiment=unlearn_source"])
    # What is taken out: forget (the run's data.forget set, which it must have trained on).
    forget: str = "forget"
    # The method's own knob: gradient_difference's weight of the forget term against the retained text's;
    # localize's share of the MLP units cut, in percent. gradient_ascent, npo and retain have none (Adam's
    # steps do not depend on a loss's scale): their strength is how far they go, train.max_steps and train.lr.
    strength: float = 1.0
    # NPO's inverse temperature beta (the paper's 0.1).
    beta: float = 0.1
    # The relearning attack at the end: this many steps of fine-tuning on half of the forget set (and,
    # separately, on as much held-out text), then the other half measured; the same steps applied to the
    # retrained model (relearn/... in summary.json). 0: none.
    relearn_steps: int = 20
    # Set by the command, not by hand: the source run's folder and the retrained model's final/ folder.
    source_dir: Optional[str] = None
    retrained: Optional[str] = None

    @property
    def on(self) -> bool:
        return self.method is not None

    def problems(self) -> list[str]:
        c = Checks("unlearn", self)
        if not self.on:
            return c.problems
        c.one_of("method", UNLEARN_METHODS)
        c.one_of("forget", FORGET_SETS)
        if c.finite("strength"):
            c.need(self.strength >= 0, "strength", "must be >= 0")
            if self.method == "localize":
                c.need(self.strength < 100, "strength", "localize cuts this percentage of the MLP units: below 100")
        if c.finite("beta"):
            c.need(self.beta > 0, "beta", "must be > 0")
        c.at_least("relearn_steps", 0, " (0: no relearning attack)")
        if self.run is None:
            c.need(bool(self.source), "source", "needs the overrides of the source run (or set unlearn.run)")
        else:
            c.need(os.path.isdir(os.path.expanduser(self.run)), "run", "no such folder; name a finished run's folder")
        return c.problems
