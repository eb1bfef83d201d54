"""The quality gate: whether a newly trained model may go live without a person deciding."""

from __future__ import annotations

from similarity.metrics import Gate, Scores


def gate_decision(validation: Scores | None, *, has_previous: bool, comparison_error: str | None = None) -> Gate:
    """Pass only when validation top-20 is at least the raw baseline's and the active model's.

    `has_previous`: an active model on the same backbone weights was scored alongside.
    `comparison_error`: there is such an active model but it could not be loaded. The run is
    then refused (never passed on the baseline alone): nobody checked it against what serves
    now, so it waits, ready, for a person to compare and activate it with a recorded override.
    """
    figures = _figures(validation)
    if comparison_error is not None:
        measured = "" if figures is None else f"; validation top-20 {figures[0]:.3f}, baseline {figures[1]:.3f}"
        return Gate(
            passed=False,
            reason=f"not compared with the active model, which could not be loaded ({comparison_error}), "
            f"so it does not go live by itself{measured}",
            comparison_error=comparison_error,
        )
    if figures is None or validation is None:
        if has_previous:
            return Gate(passed=False, reason="no validation products to compare with the active model")
        return Gate(passed=True, reason="first model; too few products for a validation split")
    new, baseline = figures
    floors = {"baseline": baseline}
    if validation.previous is not None:
        floors["active model"] = validation.previous.top20
    below = [f"{name} {value:.3f}" for name, value in floors.items() if new < value]
    if below:
        return Gate(passed=False, reason=f"validation top-20 {new:.3f} is below the " + " and the ".join(below))
    return Gate(
        passed=True,
        reason=f"validation top-20 {new:.3f} ≥ " + ", ".join(f"{name} {value:.3f}" for name, value in floors.items()),
    )


def _figures(validation: Scores | None) -> tuple[float, float] | None:
    """(new model's, baseline's) validation top-20, or None where validation was not scored."""
    if validation is None or validation.siamese is None or validation.baseline is None:
        return None
    return validation.siamese.top20, validation.baseline.top20
