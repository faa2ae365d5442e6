"""The training loss as a function of one flat parameter vector, in chunks.

A :class:`LossObjective` evaluates the mean loss over N samples, its gradient
and Hessian-vector products at a fixed ``theta`` (P,). Samples are processed in
chunks of ``chunk_samples``, and chunk results are weighted by chunk size, so
the values equal those of one pass over all N samples while memory stays
bounded. Every Hessian-vector product is counted.
"""

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import (
    functional_call,
    grad,
    jvp,
    replace_all_batch_norm_modules_,
    vjp,
    vmap,
)

from saddlepoint.spec import LossName
from saddlepoint.spec.analysis import ModelMode
from worker.analysis.hessian import flatten_parameters
from worker.engine.losses import compute_loss


class InconsistentObjective(ValueError):
    """Two evaluations of the loss at the same parameters disagree."""


class LossObjective:
    """Loss, gradient and Hessian-vector products of a model at ``theta``.

    The model is deep-copied to ``dtype`` on the device of ``inputs``, so the
    caller's model is never changed. In ``eval`` mode dropout is off and batch
    norm uses its running statistics. In ``train`` mode batch norm uses the
    statistics of each chunk, so the whole subset is one chunk, and the copy
    leaves the running statistics of the caller's model alone.

    Single products (:meth:`hvp`) differentiate a kept gradient graph again.
    Batches (:meth:`hvp_batch`, used for the full Hessian) vmap a
    reverse-over-reverse product, the vector-Jacobian product of the
    gradient, or forward-over-reverse with ``hvp_method="forward"``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossName,
        inputs: Tensor,
        targets: Tensor,
        *,
        mode: ModelMode = ModelMode.EVAL,
        dtype: torch.dtype = torch.float64,
        chunk_samples: int = 4096,
        hvp_method: str = "reverse",
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        if inputs.shape[0] == 0:
            raise ValueError(
                "inputs has no samples, but the analysis needs at least one"
            )
        if hvp_method not in ("reverse", "forward"):
            raise ValueError(f"hvp_method must be reverse or forward, not {hvp_method}")
        self.device = inputs.device
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype)
        self.model.train(mode == ModelMode.TRAIN)
        if mode == ModelMode.TRAIN:
            # Batch norm would update its running statistics in place, which
            # torch.func transforms reject; the copy uses batch statistics only.
            replace_all_batch_norm_modules_(self.model)
        self.loss_name = loss
        self.samples = inputs.shape[0]
        chunk = self.samples if mode == ModelMode.TRAIN else chunk_samples
        self.chunks = [
            (x.to(dtype), y.to(self.device))
            for x, y in zip(
                torch.split(inputs, chunk), torch.split(targets, chunk), strict=True
            )
        ]
        self.theta, self._unflatten = flatten_parameters(self.model)
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.hvp_method = hvp_method
        self.hvp_count = 0
        # Called before each gradient or product; raises to abandon the analysis.
        self.interrupt = interrupt
        self._gradient_graphs: list[tuple[Tensor, Tensor, float]] | None = None

    def at(self, theta: Tensor) -> "LossObjective":
        """Return the same objective at other parameters ``theta`` (P,)."""
        moved = copy.copy(self)
        moved.theta = theta.detach()
        moved._gradient_graphs = None
        moved.hvp_count = 0
        return moved

    @property
    def dim(self) -> int:
        return int(self.theta.numel())

    def chunk_loss(self, theta: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        state = {**self.buffers, **self._unflatten(theta)}
        outputs = functional_call(self.model, state, (inputs,))
        return compute_loss(self.loss_name, outputs, targets)

    def _weighted(self, compute: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Sum ``compute(x, y)`` over chunks weighted by each chunk's share of N."""
        total: Tensor | None = None
        for inputs, targets in self.chunks:
            part = compute(inputs, targets) * (inputs.shape[0] / self.samples)
            total = part if total is None else total + part
        assert total is not None
        return total

    def loss(self, theta: Tensor | None = None) -> float:
        point = self.theta if theta is None else theta
        with torch.no_grad():
            return float(self._weighted(lambda x, y: self.chunk_loss(point, x, y)))

    def _check_interrupt(self) -> None:
        if self.interrupt is not None:
            self.interrupt()

    def gradient(self, theta: Tensor | None = None) -> Tensor:
        self._check_interrupt()
        point = self.theta if theta is None else theta
        return self._weighted(lambda x, y: grad(self.chunk_loss)(point, x, y).detach())

    def hvp(self, v: Tensor) -> Tensor:
        """Return H v (P,) at ``theta``; costs one Hessian-vector product.

        The first call keeps each chunk's gradient graph (double backward), and
        every later call differentiates those graphs once more. That skips the
        forward and first backward pass per product, which measured about twice
        as fast as a fresh product in iterative methods' loops.
        """
        self._check_interrupt()
        self.hvp_count += 1
        total: Tensor | None = None
        for leaf, chunk_gradient, weight in self._graphs():
            (part,) = torch.autograd.grad(
                chunk_gradient, leaf, grad_outputs=v, retain_graph=True
            )
            total = part * weight if total is None else total + part * weight
        assert total is not None
        return total.detach()

    def _graphs(self) -> list[tuple[Tensor, Tensor, float]]:
        """Return (theta leaf, gradient with graph, weight) per chunk, built once."""
        if self._gradient_graphs is None:
            graphs = []
            for inputs, targets in self.chunks:
                leaf = self.theta.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    value = self.chunk_loss(leaf, inputs, targets)
                    (chunk_gradient,) = torch.autograd.grad(
                        value, leaf, create_graph=True
                    )
                graphs.append((leaf, chunk_gradient, inputs.shape[0] / self.samples))
            self._gradient_graphs = graphs
        return self._gradient_graphs

    def release_graphs(self) -> None:
        """Free the kept gradient graphs; the next product rebuilds them."""
        self._gradient_graphs = None

    def hvp_batch(self, vectors: Tensor) -> Tensor:
        """Return H V for vectors (B, P) as rows (B, P); costs B products."""
        self._check_interrupt()
        self.hvp_count += vectors.shape[0]
        batched = vmap(self._chunk_hvp, in_dims=(0, None, None))
        return self._weighted(lambda x, y: batched(vectors, x, y)).detach()

    def _chunk_hvp(self, v: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        def chunk_gradient(theta: Tensor) -> Tensor:
            return grad(self.chunk_loss)(theta, inputs, targets)

        if self.hvp_method == "forward":
            return jvp(chunk_gradient, (self.theta,), (v,))[1]
        pullback = vjp(chunk_gradient, self.theta)[1]
        return pullback(v)[0]

    def hessian(self, chunk_size: int = 32) -> Tensor:
        """Return the symmetrized Hessian (P, P), built from P products."""
        p = self.dim
        hessian = self.theta.new_empty((p, p))
        for start in range(0, p, chunk_size):
            stop = min(start + chunk_size, p)
            rows = torch.arange(stop - start, device=self.device)
            basis = self.theta.new_zeros((stop - start, p))
            basis[rows, rows + start] = 1
            hessian[start:stop] = self.hvp_batch(basis)
        return (hessian + hessian.T) / 2

    def check_consistency(self, relative_tolerance: float = 1e-9) -> None:
        """Raise InconsistentObjective unless two evaluations agree.

        Dropout in train mode, for example, makes every evaluation a different
        function, and its curvature would be noise.
        """
        first_loss, first_gradient = self.loss(), self.gradient()
        second_loss, second_gradient = self.loss(), self.gradient()
        scale = max(float(first_gradient.norm()), 1e-30)
        gradient_gap = float((first_gradient - second_gradient).norm()) / scale
        loss_gap = abs(first_loss - second_loss) / max(abs(first_loss), 1e-30)
        if gradient_gap > relative_tolerance or loss_gap > relative_tolerance:
            raise InconsistentObjective(
                "two evaluations of the loss at the same parameters disagree "
                f"(relative loss gap {loss_gap:.2e}, gradient gap {gradient_gap:.2e}), "
                "so the curvature would be noise; the model is random in this mode "
                '(dropout?). Set analysis.mode to "eval"'
            )
