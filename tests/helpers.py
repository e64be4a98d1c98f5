"""Small functions the tests share (imported as ``from helpers import ...``: pytest puts tests/ on the path)."""

from collections.abc import Callable

import torch


def fit(model: torch.nn.Module, loss: Callable[[int], torch.Tensor], *, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    """Train ``model`` with Adam on ``loss(step)`` for ``steps`` steps; (first loss, last loss), each
    taken before its step's update, so a test can assert that the loss fell."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = last = None
    for step in range(steps):
        value = loss(step)
        opt.zero_grad()
        value.backward()
        opt.step()
        last = value.item()
        first = last if first is None else first
    return first, last
