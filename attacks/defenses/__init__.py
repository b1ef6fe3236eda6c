"""Defenses (``nnaudit.defenses`` plugins) and the ``defenses`` section: each defense attacked naively and
adaptively, side by side. Randomized-smoothing certification plugs in as a defense with its own ``evaluate``."""

from attacks.defenses.base import DEFENSES_GROUP, DefendedAdapter, Defense
from attacks.defenses.jpeg import JPEG
from attacks.defenses.randomized import GaussianNoise
from attacks.defenses.smoothing import RandomizedSmoothing
from attacks.defenses.squeeze import BitDepth, MedianSmoothing

__all__ = ["DEFENSES_GROUP", "JPEG", "BitDepth", "DefendedAdapter", "Defense", "GaussianNoise", "MedianSmoothing",
           "RandomizedSmoothing"]
