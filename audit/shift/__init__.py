"""Distribution shift: what the world does to inputs (blur, noise, weather, compression, missing or drifted
features), beside ``attacks/`` (what an adversary does). One job per module:

- ``catalog``: names, families, which data each corruption fits (no torch);
- ``corruptions``: ``corrupt`` and the registry of the 19 image corruptions (Hendrycks & Dietterich 2019),
  written in torch in ``noise``, ``blur``, ``weather``, ``spatter``, ``digital`` and ``jpeg`` on the shared
  operations of ``filters``, drawing from per-sample generators (``sampling``);
- ``tabular``: feature noise, missing values and feature shift for tabular data;
- ``evaluate``: what one chunk of the corruptions section computes; ``mce``: corruption errors, mCE;
- ``section``: the ``corruptions`` section plugin.

Only ``catalog`` is imported here, so importing the package does not import torch.
"""

from audit.shift.catalog import COMMON, EXTRAS, FAMILIES, IMAGE_CORRUPTIONS, SEVERITIES, TABULAR_SHIFTS

__all__ = ["COMMON", "EXTRAS", "FAMILIES", "IMAGE_CORRUPTIONS", "SEVERITIES", "TABULAR_SHIFTS"]
