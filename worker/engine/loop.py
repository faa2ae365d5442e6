"""The training loop: mini-batch updates, per-step and per-epoch metrics.

The loop raises rather than returns when a run ends early (cancelled, diverged,
out of time), so the caller maps each exception to a final status. It reports
progress only through :class:`TrainingHooks` and logs one line at the start and
one at the end of a run, never per step.
"""

import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from saddlepoint.records import (
    EpochMetrics,
    StepMetrics,
    TrainingSummary,
    finite_or_none,
)
from saddlepoint.schedules import learning_rate_at
from saddlepoint.spec import ExperimentSpec
from worker.engine.data import TensorSplit, load_split, to_tensors
from worker.engine.losses import compute_accuracy, compute_loss
from worker.engine.models import build_model
from worker.engine.optimizers import build_optimizer

logger = logging.getLogger(__name__)


class TrainingHooks(Protocol):
    """Callbacks through which the loop reports progress and learns to stop."""

    def on_step(self, record: StepMetrics) -> None: ...

    def on_epoch(self, record: EpochMetrics) -> None: ...

    def should_stop(self) -> bool:
        """Return True to stop training. The loop calls this before every update."""
        ...

    # Hooks may also define after_epoch(model, data, epoch, steps_completed),
    # which the loop calls with the live model and the TensorSplit after each
    # epoch's record, to analyze the parameters during training, for example.
    # It must not change the model.


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


@dataclass(frozen=True)
class GradientNoise:
    """Spread of the mini-batch gradients of one pass around the full gradient."""

    noise: float
    full_gradient_norm: float
    batches: int
    elapsed_s: float


@dataclass
class _Evaluation:
    train_loss: float
    train_accuracy: float | None
    val_loss: float
    val_accuracy: float | None


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
    step_times_ms: list[float] = field(default_factory=list)

    def run_epoch(self, epoch: int, step: int) -> tuple[int, EpochMetrics]:
        """Run the epoch's updates from global ``step``, then evaluate.

        When ``spec.metrics.gradient_noise_epochs`` lists the epoch, also
        measures the gradient noise over the epoch's own batches, after
        ``epoch_time_s`` is taken. Returns the global index of the next update
        and the epoch record. Raises TrainingDiverged after emitting the
        record when an epoch loss is not finite.
        """
        epoch_started = time.perf_counter()
        train_x, train_y = self.data.train_x, self.data.train_y
        permutation = torch.randperm(len(train_y), generator=self.generator)
        batches = permutation.to(train_y.device).split(self.spec.resolved_batch_size)
        first_update = len(self.step_times_ms)
        for indices in batches:
            step_time_ms = self.update(step, epoch, train_x[indices], train_y[indices])
            self.step_times_ms.append(step_time_ms)
            step += 1
            self.check_time_limit(step)

        evaluation = self.evaluate()
        epoch_time_s = time.perf_counter() - epoch_started
        noise = None
        if epoch in self.spec.metrics.gradient_noise_epochs:
            noise = measure_gradient_noise(
                self.model,
                functools.partial(compute_loss, self.spec.loss),
                train_x,
                train_y,
                batches,
            )
        step_times_ms = self.step_times_ms[first_update:]
        record = _epoch_record(
            epoch, step - 1, evaluation, epoch_time_s, step_times_ms, noise
        )
        self.hooks.on_epoch(record)
        if not math.isfinite(evaluation.train_loss):
            raise TrainingDiverged(step - 1, evaluation.train_loss, "train loss")
        if not math.isfinite(evaluation.val_loss):
            raise TrainingDiverged(step - 1, evaluation.val_loss, "validation loss")
        if noise is not None:
            self.check_time_limit(step)
        after_epoch = getattr(self.hooks, "after_epoch", None)
        if after_epoch is not None:
            after_epoch(self.model, self.data, epoch, step)
            self.check_time_limit(step)
        return step, record

    def update(
        self, step: int, epoch: int, inputs: torch.Tensor, targets: torch.Tensor
    ) -> float:
        """Apply update ``step`` on one batch, emit its record, return its time in ms.

        With ``optimizer.clip_grad_norm`` set to c, the gradient g is scaled
        by ``min(1, c/(‖g‖ + 1e-6))`` before the update, as
        ``torch.nn.utils.clip_grad_norm_`` does. The record's ``grad_norm``
        is ‖g‖ before clipping, so it shows how often clipping acted.

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
        norm = _gradient_norm(self.model)
        loss_value, grad_norm = torch.stack([loss.detach(), norm]).tolist()
        if math.isfinite(loss_value):
            self.clip_gradients(norm)
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
        return step_time_ms

    def clip_gradients(self, norm: torch.Tensor) -> None:
        """Scale the gradients to ``clip_grad_norm`` when ``norm`` exceeds it."""
        max_norm = self.spec.optimizer.clip_grad_norm
        if max_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(
                self.model.parameters(), max_norm, norm
            )

    def check_time_limit(self, step: int) -> None:
        if self.time_limit_s is None:
            return
        if time.perf_counter() - self.started > self.time_limit_s:
            raise TrainingTimeLimit(step, self.time_limit_s)

    @torch.no_grad()
    def evaluate(self) -> _Evaluation:
        """Compute loss and accuracy over the whole train and validation splits.

        Runs one forward pass per split in eval mode, so the splits must fit
        in device memory at once. The API bounds that size with the limit
        ``max_activation_values``. Accuracy is None for regression targets.
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
            train_accuracy=compute_accuracy(train_logits, train_y),
            val_loss=compute_loss(self.spec.loss, val_logits, val_y).item(),
            val_accuracy=compute_accuracy(val_logits, val_y),
        )


def _epoch_record(
    epoch: int,
    last_step: int,
    evaluation: _Evaluation,
    epoch_time_s: float,
    step_times_ms: Sequence[float],
    noise: GradientNoise | None,
) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch,
        step=last_step,
        train_loss=finite_or_none(evaluation.train_loss),
        train_accuracy=evaluation.train_accuracy,
        val_loss=finite_or_none(evaluation.val_loss),
        val_accuracy=evaluation.val_accuracy,
        epoch_time_s=epoch_time_s,
        updates_per_epoch=len(step_times_ms),
        mean_step_time_ms=statistics.fmean(step_times_ms),
        gradient_noise=None if noise is None else finite_or_none(noise.noise),
        full_gradient_norm=(
            None if noise is None else finite_or_none(noise.full_gradient_norm)
        ),
        gradient_noise_time_s=None if noise is None else noise.elapsed_s,
    )


def measure_gradient_noise(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batches: Sequence[torch.Tensor],
) -> GradientNoise:
    """Measure how far the mini-batch gradients of one pass are from the full one.

    ``batches`` contains the K index tensors of one pass, which together cover
    each training row once. With gᵏ the gradient of the mean loss over batch
    k and G the gradient of the mean loss over all rows, both at the current
    parameters::

        noise = (1/K) · Σₖ ‖gᵏ − G‖²

    Every batch counts once, so a smaller last batch weighs as much as the
    others. For batches of b of n samples drawn without replacement, the
    expected noise is tr(Σ)/b · (n − b)/(n − 1), where Σ is the covariance of
    the per-sample gradients with divisor n. So the noise is 0 for b = n.

    G is computed over the rows in batch order, so with one batch both
    gradients come from identical arithmetic and the noise is exactly 0.
    Costs K + 1 forward and backward passes, in the model's current mode,
    and two flat copies of the gradient.

    Leaves the parameters, their ``.grad``, the module buffers (batch-norm
    statistics) and the random number generators as they were, so measuring
    does not change the rest of the run. With dropout, each gradient uses
    fresh masks. With batch norm, G normalizes with whole-split statistics,
    so the batch gradients do not average to G and the noise includes that gap.
    """
    started = time.perf_counter()
    parameters = list(model.parameters())
    buffers = [buffer.clone() for buffer in model.buffers()]
    with torch.random.fork_rng(devices=_cuda_devices(inputs.device)):
        order = torch.cat(list(batches))
        loss = loss_fn(model(inputs[order]), targets[order])
        full = _flat_gradient(loss, parameters)
        total = torch.zeros((), dtype=full.dtype, device=full.device)
        for indices in batches:
            loss = loss_fn(model(inputs[indices]), targets[indices])
            total += (_flat_gradient(loss, parameters) - full).square().sum()
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    noise, full_norm = torch.stack([total / len(batches), full.norm()]).tolist()
    return GradientNoise(
        noise=noise,
        full_gradient_norm=full_norm,
        batches=len(batches),
        elapsed_s=time.perf_counter() - started,
    )


def _cuda_devices(device: torch.device) -> list[int]:
    """Return the CUDA device whose generator ``fork_rng`` must also restore."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _flat_gradient(
    loss: torch.Tensor, parameters: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Return the gradient of ``loss`` over ``parameters`` as one flat vector."""
    gradients = torch.autograd.grad(loss, parameters)
    return torch.cat([gradient.flatten() for gradient in gradients])


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
    initial_parameters: torch.Tensor | None = None,
) -> TrainingResult:
    """Train the spec's model on its dataset and return the model and summary.

    ``initial_parameters`` (P,), when given, replaces the initialization: the
    flat vector is copied into ``model.parameters()`` in order, so a run can
    continue from a point another run saved.

    Seeds ``torch.manual_seed(spec.seed)`` before building the model, and
    shuffles with a separate CPU ``torch.Generator`` seeded with ``spec.seed``,
    so a spec trains to the same numbers on CPU with the same PyTorch build.
    Each epoch draws a random permutation of the training split and runs
    ``spec.steps_per_epoch`` updates on batches of ``spec.resolved_batch_size``
    (the last one may be smaller). Update ``step`` (0-based over the run) uses
    ``learning_rate_at(spec.schedule, base rate, step, spec.total_steps)``.

    Raises TrainingStopped, TrainingDiverged or TrainingTimeLimit when the run
    ends early. ``time_limit_s`` counts from the call, including data loading,
    and is checked after every update and after each gradient noise measurement.

    NOTE: only the CPU path is tested. On CUDA, kernels may also differ in the
    last bits between runs unless deterministic algorithms are enabled.
    """
    if time_limit_s is not None and time_limit_s < 0:
        raise ValueError(f"time_limit_s must be >= 0 or None, got {time_limit_s}")
    started = time.perf_counter()
    run = _prepare_run(spec, device, hooks, time_limit_s, started)
    parameter_count = sum(parameter.numel() for parameter in run.model.parameters())
    if initial_parameters is not None:
        if initial_parameters.numel() != parameter_count:
            raise ValueError(
                f"the saved parameters have {initial_parameters.numel()} entries "
                f"but this model has {parameter_count}; continue with the same "
                "model and dataset as the run that saved them"
            )
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(
                initial_parameters.to(device, torch.float32), run.model.parameters()
            )
    logger.info(
        "training started: dataset=%s parameters=%d optimizer=%s steps=%d "
        "epochs=%d device=%s",
        spec.dataset.label,
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

    wall_time_s = time.perf_counter() - started
    summary = _summarize(
        records, run.step_times_ms, wall_time_s, str(device), parameter_count
    )
    logger.info(
        "training finished: steps=%d val_loss=%s val_accuracy=%s "
        "wall_time_s=%.3f device=%s",
        summary.steps,
        summary.val_loss,
        summary.val_accuracy,
        summary.wall_time_s,
        device,
    )
    return TrainingResult(model=run.model, data=run.data, summary=summary)


def _summarize(
    records: Sequence[EpochMetrics],
    step_times_ms: Sequence[float],
    wall_time_s: float,
    device: str,
    parameter_count: int,
) -> TrainingSummary:
    """Combine the records and update times of a finished run into its summary."""
    last = records[-1]
    measured = [
        record for record in records if record.gradient_noise_time_s is not None
    ]
    return TrainingSummary(
        steps=last.step + 1,
        epochs=len(records),
        train_loss=last.train_loss,
        train_accuracy=last.train_accuracy,
        val_loss=last.val_loss,
        val_accuracy=last.val_accuracy,
        wall_time_s=wall_time_s,
        device=device,
        parameter_count=parameter_count,
        updates_per_epoch=last.updates_per_epoch,
        mean_step_time_ms=statistics.fmean(step_times_ms),
        mean_epoch_time_s=statistics.fmean(record.epoch_time_s for record in records),
        gradient_noise=measured[-1].gradient_noise if measured else None,
        gradient_noise_epoch=measured[-1].epoch if measured else None,
    )


def _prepare_run(
    spec: ExperimentSpec,
    device: torch.device,
    hooks: TrainingHooks,
    time_limit_s: float | None,
    started: float,
) -> _Run:
    """Load the data, then seed and build the model and optimizer on ``device``."""
    data = to_tensors(load_split(spec.dataset), device)

    torch.manual_seed(spec.seed)
    model = build_model(spec.model, spec.dataset_info, spec.dataset.label)
    model = model.to(device)
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
