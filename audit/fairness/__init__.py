"""Fairness: group metrics (fairlearn), bootstrap intervals, robustness and explanation disparity.
One job per module (the classic fairness datasets load in ``audit.data.fairness``):

- ``groups``: group coding, unique metric keys, vectorized group metrics and disparities,
  fairlearn's ``MetricFrame`` as the reference;
- ``bootstrap``: seeded stratified resamples and intervals, vectorized;
- ``judge``: how sure a disparity finding is (interval, rows behind each rate);
- ``parity``: group metrics and disparities of one grouping as the section records them;
- ``robustness``: robustness disparity from the robustness section's outcomes;
- ``explanations``: explanation disparity from the explanations section's attributions;
- ``section``: the ``fairness`` section plugin.
"""

from audit.fairness.section import NO_ADVERSARIAL, NO_ATTRIBUTIONS, NO_SENSITIVE, FairnessParams, FairnessSection

__all__ = ["NO_ADVERSARIAL", "NO_ATTRIBUTIONS", "NO_SENSITIVE", "FairnessParams", "FairnessSection"]
