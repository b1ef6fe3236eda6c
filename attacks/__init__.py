"""nnaudit attacks (a generic top-level name: this is nnaudit's ``attacks`` package).

Attacks written in torch (FGSM, PGD, APGD, Square), foolbox wrappers (FMN, DDN, C&W, DeepFool,
HopSkipJump, Boundary), the robustness evaluation, gradient-masking red flags and the
``robustness`` section.
"""

from attacks.apgd import APGD
from attacks.base import Attack, AttackError, AttackNotApplicable, AttackOutput, Domain
from attacks.evaluate import BOUNDED_ATTACKS, MINIMAL_ATTACKS, NormEvaluation, evaluate_norm, make_attack
from attacks.foolbox_attacks import DDN, FMN, Boundary, CarliniWagner, DeepFool, HopSkipJump
from attacks.gradient import FGSM, PGD
from attacks.redflags import RedFlag, RedFlagParams
from attacks.square import Square

__all__ = [
    "APGD", "BOUNDED_ATTACKS", "DDN", "FGSM", "FMN", "MINIMAL_ATTACKS", "PGD", "Attack", "AttackError",
    "AttackNotApplicable", "AttackOutput", "Boundary", "CarliniWagner", "DeepFool", "Domain", "HopSkipJump",
    "NormEvaluation", "RedFlag", "RedFlagParams", "Square", "evaluate_norm", "make_attack",
]
