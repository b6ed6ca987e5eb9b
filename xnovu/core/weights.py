"""`FAIR_SHARE_WEIGHTS`: how much of a contended resource each enterprise gets (docs/priority.md "Fair-share
weights").

Format "uuid=3,uuid=1": an enterprise not named weighs 1, and "none=2" weighs the rows without an enterprise (they
form one group). Weights run from 0.001 to 1000, Temporal's range for fairness weights, so one value means the same
in the claims (xnovu/core/fairshare.py), the token budget (xnovu/novu/fairqueue.py) and the task queue's fairness
weight overrides (xnovu/temporal/bootstrap.py). The one parser of the setting; pure functions only.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping

#: The key that names the rows without an enterprise.
NO_ENTERPRISE = "none"
#: Temporal's range for fairness weights (a task queue's weight overrides); a value outside it is refused, not clamped.
WEIGHT_MIN, WEIGHT_MAX = 0.001, 1000.0


def parse_weights(text: str) -> dict[str, float]:
    """The weights of a `FAIR_SHARE_WEIGHTS` value; raises ValueError with a readable reason."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"{part!r} is not enterprise=weight")
        if key != NO_ENTERPRISE:
            try:
                key = str(uuid.UUID(key))
            except ValueError:
                raise ValueError(f"{key!r} is not an enterprise id (a UUID, or {NO_ENTERPRISE})") from None
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"the weight of {key} is not a number: {value.strip()!r}") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"the weight of {key} must be above 0, not {value.strip()}")
        if not WEIGHT_MIN <= weight <= WEIGHT_MAX:
            raise ValueError(
                f"the weight of {key} must be from {WEIGHT_MIN:g} to {WEIGHT_MAX:g} (Temporal's range for fairness"
                f" weights), not {value.strip()}"
            )
        if key in weights:
            raise ValueError(f"{key} is named twice")
        weights[key] = weight
    return weights


def group_of(enterprise: str | None) -> str:
    """The group an enterprise's work belongs to (rows without one form the group `none`)."""
    return enterprise.lower() if enterprise else NO_ENTERPRISE


def weight_of(weights: Mapping[str, float], enterprise: str | None) -> float:
    return weights.get(group_of(enterprise), 1.0)
