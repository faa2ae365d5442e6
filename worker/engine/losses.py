"""Losses and accuracy for classification and regression.

Training and the analysis share :func:`compute_loss`. Every shape is checked
before the loss is taken, so outputs (N, 1) against targets (N,) never
broadcast to an (N, N) loss.
"""

import torch
import torch.nn.functional as F

from saddlepoint.datasets import Task
from saddlepoint.spec import LossName


def infer_task(targets: torch.Tensor) -> Task:
    """Return the task that ``targets`` belong to, from their dtype.

    Integer targets are class indices and floating targets regression values.
    Raises ValueError for any other dtype (bool, complex).
    """
    if targets.dtype.is_floating_point:
        return Task.REGRESSION
    if targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(
            f"targets have dtype {targets.dtype}; use int64 class indices for "
            "classification or floating values for regression"
        )
    return Task.CLASSIFICATION


def compute_loss(
    loss: LossName,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    task: Task | None = None,
) -> torch.Tensor:
    """Return the mean loss of ``outputs`` against ``targets``.

    Classification: ``outputs`` are logits (N, C) and ``targets`` int64 class
    indices (N,) in [0, C). ``cross_entropy`` applies log-softmax itself;
    ``mse`` compares softmax probabilities with one-hot targets and averages
    over all N*C entries, as ``torch.nn.functional.mse_loss`` does.

    Regression: ``outputs`` are (N, 1) and ``targets`` floating (N,);
    ``mse`` is the mean of (output - target)² over the N samples, with the
    targets cast to the outputs' dtype. ``cross_entropy`` is rejected.

    ``task`` defaults to the one the targets' dtype implies. Raises
    ValueError on a shape, dtype or range that does not fit the task.
    """
    if task is None:
        task = infer_task(targets)
    if task == Task.REGRESSION:
        return _regression_loss(loss, outputs, targets)
    _check_classification(outputs, targets)
    if loss == LossName.CROSS_ENTROPY:
        return F.cross_entropy(outputs, targets)
    one_hot = F.one_hot(targets, num_classes=outputs.shape[1]).to(outputs.dtype)
    # Written out rather than F.mse_loss: in torch 2.13 the double derivative
    # of F.mse_loss with mean reduction fails under torch.func ("ZeroTensors are
    # immutable"), which the Hessian analysis needs.
    return (torch.softmax(outputs, dim=1) - one_hot).square().mean()


def _check_classification(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if targets.dtype != torch.int64:
        raise ValueError(
            f"classification targets must be int64 class indices, got "
            f"{targets.dtype}; use mse with a regression dataset for real values"
        )
    classes = logits.shape[1]
    # One device sync; CUDA would otherwise fail with an opaque device assert.
    out_of_range = (targets < 0) | (targets >= classes)
    if bool(out_of_range.any()):
        bad = int(targets[out_of_range][0])
        raise ValueError(
            f"target {bad} is out of range for {classes} classes; class indices "
            f"must be in [0, {classes})"
        )


def _regression_loss(
    loss: LossName, outputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    if loss == LossName.CROSS_ENTROPY:
        raise ValueError(
            "cross_entropy needs class indices but the targets are regression "
            f"values ({targets.dtype}); use mse"
        )
    if not targets.dtype.is_floating_point:
        raise ValueError(
            f"regression targets must be floating point, got {targets.dtype}"
        )
    if outputs.ndim != 2 or outputs.shape[1] != 1 or targets.shape != outputs.shape[:1]:
        raise ValueError(
            f"expected outputs (N, 1) and targets (N,) for regression, got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}"
        )
    return (outputs[:, 0] - targets.to(outputs.dtype)).square().mean()


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """Count rows whose largest logit is at the target class."""
    _check_classification(logits, targets)
    return int((logits.argmax(dim=1) == targets).sum().item())


def compute_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Return the share of correct predictions, or None for regression targets."""
    if infer_task(targets) == Task.REGRESSION:
        return None
    return count_correct(outputs, targets) / len(targets)
