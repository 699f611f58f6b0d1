"""Honest evaluation in torch: the mean cross-entropy over the whole validation set (docs/protocol.md `val_loss`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def val_loss(model: torch.nn.Module, x_NxT: np.ndarray, y_NxT: np.ndarray, device, batch_size: int = 8) -> float:
    """Mean over every predicted token of the windows (x, y) of -log p(y | x), in float64 accumulation."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(x_NxT), batch_size):
        x = torch.from_numpy(x_NxT[i : i + batch_size]).to(device)
        y = torch.from_numpy(y_NxT[i : i + batch_size]).to(device)
        logits, _ = model(x, y)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count
