"""Serving trained runs: the `Classifier` for prediction (and, later, the HTTP service)."""
