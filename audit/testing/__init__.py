"""The conformance suite: the checks nnaudit's own plugins pass, for a third party to run on theirs.

Call a check on your plugin class (it raises ``ConformanceError`` naming the plugin and the broken promise)::

    from audit.testing import check_attack, check_defense, check_explainer, check_section
    check_attack(MyAttack, params={"steps": 5})      # bounds, eps ball, seed, verified success, clear errors
    check_defense(MyDefense)                          # shape, device, bounds, seed, batch independence
    check_explainer(MyExplainer)                      # shape, finite, device, seed, batch independence
    check_section(MySection, params={...})            # schema, metric keys, seed, prints nothing, errors

or run the suite on every plugin installed in the ``nnaudit.*`` entry-point groups (yours included once your
package is installed)::

    pytest --pyargs audit.testing

The checks run on ``tiny_problem``: a random-weight torch network and seeded inputs in [0, 1], on the CPU, so
they take seconds. Layer: application (it drives plugins of every kind, as the CLI does); plugins never import
it.
"""

from audit.testing.checks import ConformanceError, Report, check_attack, check_defense, check_explainer
from audit.testing.problem import Problem, tiny_problem
from audit.testing.sections import check_section

__all__ = ["ConformanceError", "Problem", "Report", "check_attack", "check_defense", "check_explainer",
           "check_section", "tiny_problem"]
