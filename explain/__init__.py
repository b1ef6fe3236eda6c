"""nnaudit explanations (a generic top-level name: this is nnaudit's ``explain`` package)."""
