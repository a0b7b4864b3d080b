"""Helpers for tests that count what the model does."""

from __future__ import annotations


class ForwardCounter:
    """Counts forward passes of the model (each scoring batch is one) inside a ``with`` block."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()
