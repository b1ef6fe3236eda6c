"""nnaudit core: config, model adapters, data, plugins, runner, results, gate and CLI.

Importing this package is light: torch and the explainer libraries load only where used.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
