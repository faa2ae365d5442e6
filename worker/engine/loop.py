"""The training loop: mini-batch updates, per-step and per-epoch metrics.

The loop raises rather than returns when a run ends early (cancelled, diverged,
out of time), so the caller maps each exception to a final status. It reports
progress only through :class:`TrainingHooks` and logs one line at the start and
one at the end of a run, never per step.
"""

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from saddlepoint.datasets import DATASETS
from saddlepoint.records import (
    EpochMetrics,
    StepMetrics,
    TrainingSummary,
    finite_or_none,
)
from saddlepoint.schedules import learning_rate_at
from saddlepoint.spec import ExperimentSpec
from worker.engine.data import TensorSplit, load_split, to_tensors
from worker.engine.losses import compute_loss, count_correct
from worker.engine.models import build_mlp
from worker.engine.optimizers import build_optimizer

logger = logging.getLogger(__name__)


class TrainingHooks(Protocol):
    """Callbacks through which the loop reports progress and learns to stop."""

    def on_step(self, record: StepMetrics) -> None: ...

    def on_epoch(self, record: EpochMetrics) -> None: ...

    def should_stop(self) -> bool:
        """Return True to stop training. The loop calls this before every update."""
        ...


class TrainingStopped(Exception):
    """Training stopped after ``step`` updates because ``should_stop()`` was True."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped on request after {step} updates")
        self.step = step


class TrainingDiverged(Exception):
    """A loss became NaN or infinite at update ``step`` (0-based).

    ``loss`` is the non-finite value. When it is a batch loss, the optimizer
    did not apply update ``step``. When it is an epoch's train or validation
    loss, ``step`` is the epoch's last update, which was applied.
    """

    def __init__(self, step: int, loss: float, loss_name: str = "loss") -> None:
        super().__init__(f"{loss_name} became {loss} at step {step}")
        self.step = step
        self.loss = loss


class TrainingTimeLimit(Exception):
    """Training ran past ``time_limit_s`` after ``step`` completed updates."""

    def __init__(self, step: int, time_limit_s: float) -> None:
        super().__init__(
            f"training exceeded its time limit of {time_limit_s:g} s "
            f"after {step} updates"
        )
        self.step = step
        self.time_limit_s = time_limit_s


@dataclass
class TrainingResult:
    """The trained model, the data it was trained on, and the final numbers."""

    model: nn.Module
    data: TensorSplit
    summary: TrainingSummary


@dataclass
class _Evaluation:
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass
class _Run:
    """State shared by the updates and evaluations of one training run."""

    spec: ExperimentSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: TensorSplit
    hooks: TrainingHooks
    generator: torch.Generator
    started: float
    time_limit_s: float | None

    def run_epoch(self, epoch: int, step: int) -> tuple[int, EpochMetrics]:
        """Run the epoch's updates from global ``step``, then evaluate.

        Returns the global index of the next update and the epoch record.
        Raises TrainingDiverged after emitting the record when an epoch loss
        is not finite.
        """
        epoch_started = time.perf_counter()
        train_x, train_y = self.data.train_x, self.data.train_y
        permutation = torch.randperm(len(train_y), generator=self.generator)
        batches = permutation.to(train_y.device).split(self.spec.resolved_batch_size)
        for indices in batches:
            self.update(step, epoch, train_x[indices], train_y[indices])
            step += 1
            self.check_time_limit(step)

        evaluation = self.evaluate()
        record = EpochMetrics(
            epoch=epoch,
            step=step - 1,
            train_loss=finite_or_none(evaluation.train_loss),
            train_accuracy=evaluation.train_accuracy,
            val_loss=finite_or_none(evaluation.val_loss),
            val_accuracy=evaluation.val_accuracy,
            epoch_time_s=time.perf_counter() - epoch_started,
        )
        self.hooks.on_epoch(record)
        if not math.isfinite(evaluation.train_loss):
            raise TrainingDiverged(step - 1, evaluation.train_loss, "train loss")
        if not math.isfinite(evaluation.val_loss):
            raise TrainingDiverged(step - 1, evaluation.val_loss, "validation loss")
        return step, record

    def update(
        self, step: int, epoch: int, inputs: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """Apply update ``step`` on one batch and emit its step record.

        Raises TrainingStopped before the update when the hooks ask to stop,
        and TrainingDiverged, without applying the update, when the batch loss
        is not finite.
        """
        if self.hooks.should_stop():
            raise TrainingStopped(step)

        learning_rate = learning_rate_at(
            self.spec.schedule,
            self.spec.optimizer.learning_rate,
            step,
            self.spec.total_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

        update_started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = compute_loss(self.spec.loss, self.model(inputs), targets)
        loss.backward()
        # One transfer for both numbers: .tolist() waits for the device, so
        # the forward and backward passes count towards step_time_ms. The
        # optimizer step may still run asynchronously on a GPU, and then it
        # counts towards the next update's time.
        loss_value, grad_norm = torch.stack(
            [loss.detach(), _gradient_norm(self.model)]
        ).tolist()
        if math.isfinite(loss_value):
            self.optimizer.step()
        step_time_ms = (time.perf_counter() - update_started) * 1000

        self.hooks.on_step(
            StepMetrics(
                step=step,
                epoch=epoch,
                loss=finite_or_none(loss_value),
                learning_rate=learning_rate,
                grad_norm=finite_or_none(grad_norm),
                step_time_ms=step_time_ms,
            )
        )
        if not math.isfinite(loss_value):
            raise TrainingDiverged(step, loss_value)

    def check_time_limit(self, step: int) -> None:
        if self.time_limit_s is None:
            return
        if time.perf_counter() - self.started > self.time_limit_s:
            raise TrainingTimeLimit(step, self.time_limit_s)

    @torch.no_grad()
    def evaluate(self) -> _Evaluation:
        """Compute loss and accuracy over the whole train and validation splits.

        Runs one forward pass per split in eval mode, so the splits must fit
        in device memory at once (the built-in datasets have under 2,000 rows).
        """
        self.model.eval()
        try:
            train_logits = self.model(self.data.train_x)
            val_logits = self.model(self.data.val_x)
        finally:
            self.model.train()
        train_y, val_y = self.data.train_y, self.data.val_y
        return _Evaluation(
            train_loss=compute_loss(self.spec.loss, train_logits, train_y).item(),
            train_accuracy=count_correct(train_logits, train_y) / len(train_y),
            val_loss=compute_loss(self.spec.loss, val_logits, val_y).item(),
            val_accuracy=count_correct(val_logits, val_y) / len(val_y),
        )


def _gradient_norm(model: nn.Module) -> torch.Tensor:
    """Return the L2 norm of all parameter gradients taken as one vector.

    Computed as the norm of the per-parameter norms, which equals the norm of
    the concatenated gradient without building it.
    """
    norms = [
        torch.linalg.vector_norm(parameter.grad)
        for parameter in model.parameters()
        if parameter.grad is not None
    ]
    return torch.linalg.vector_norm(torch.stack(norms))


def train(
    spec: ExperimentSpec,
    device: torch.device,
    hooks: TrainingHooks,
    time_limit_s: float | None = None,
) -> TrainingResult:
    """Train the spec's MLP on its dataset and return the model and summary.

    Seeds ``torch.manual_seed(spec.seed)`` before building the model, and
    shuffles with a separate CPU ``torch.Generator`` seeded with ``spec.seed``,
    so a spec trains to the same numbers on CPU with the same PyTorch build.
    Each epoch draws a random permutation of the training split and runs
    ``spec.steps_per_epoch`` updates on batches of ``spec.resolved_batch_size``
    (the last one may be smaller). Update ``step`` (0-based over the run) uses
    ``learning_rate_at(spec.schedule, base rate, step, spec.total_steps)``.

    Raises TrainingStopped, TrainingDiverged or TrainingTimeLimit when the run
    ends early. ``time_limit_s`` counts from the call, including data loading,
    and is checked after every update.

    NOTE: only the CPU path is tested. On CUDA, kernels may also differ in the
    last bits between runs unless deterministic algorithms are enabled.
    """
    if time_limit_s is not None and time_limit_s < 0:
        raise ValueError(f"time_limit_s must be >= 0 or None, got {time_limit_s}")
    started = time.perf_counter()
    run = _prepare_run(spec, device, hooks, time_limit_s, started)
    parameter_count = sum(parameter.numel() for parameter in run.model.parameters())
    logger.info(
        "training started: dataset=%s parameters=%d optimizer=%s steps=%d "
        "epochs=%d device=%s",
        spec.dataset.name.value,
        parameter_count,
        spec.optimizer.name,
        spec.total_steps,
        spec.epochs,
        device,
    )

    step = 0
    records = []
    for epoch in range(spec.epochs):
        step, record = run.run_epoch(epoch, step)
        records.append(record)

    last = records[-1]
    summary = TrainingSummary(
        steps=step,
        epochs=spec.epochs,
        train_loss=last.train_loss,
        train_accuracy=last.train_accuracy,
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        wall_time_s=time.perf_counter() - started,
        device=str(device),
        parameter_count=parameter_count,
    )
    logger.info(
        "training finished: steps=%d val_loss=%s val_accuracy=%.4f "
        "wall_time_s=%.3f device=%s",
        summary.steps,
        summary.val_loss,
        summary.val_accuracy,
        summary.wall_time_s,
        device,
    )
    return TrainingResult(model=run.model, data=run.data, summary=summary)


def _prepare_run(
    spec: ExperimentSpec,
    device: torch.device,
    hooks: TrainingHooks,
    time_limit_s: float | None,
    started: float,
) -> _Run:
    """Load the data, then seed and build the model and optimizer on ``device``."""
    info = DATASETS[spec.dataset.name]
    data = to_tensors(load_split(spec.dataset), device)

    torch.manual_seed(spec.seed)
    model = build_mlp(spec.model, info.features, info.classes).to(device)
    return _Run(
        spec=spec,
        model=model,
        optimizer=build_optimizer(spec.optimizer, model.parameters()),
        data=data,
        hooks=hooks,
        generator=torch.Generator().manual_seed(spec.seed),
        started=started,
        time_limit_s=time_limit_s,
    )
