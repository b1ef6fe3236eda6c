"""nnaudit attacks and defenses (a generic top-level name: this is nnaudit's ``attacks`` package)."""
