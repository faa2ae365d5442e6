"""Classification losses on logits, shared by training and the analysis."""

import torch
import torch.nn.functional as F

from saddlepoint.spec import LossName


def compute_loss(
    loss: LossName, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Return the mean loss of ``logits`` (N, C) against class indices (N,).

    ``cross_entropy`` applies log-softmax itself. ``mse`` compares softmax
    probabilities with one-hot targets and averages over all N*C entries, as
    ``torch.nn.functional.mse_loss`` does.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if loss == LossName.CROSS_ENTROPY:
        return F.cross_entropy(logits, targets)
    one_hot = F.one_hot(targets, num_classes=logits.shape[1]).to(logits.dtype)
    return F.mse_loss(torch.softmax(logits, dim=1), one_hot)


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> int:
    return int((logits.argmax(dim=1) == targets).sum().item())
