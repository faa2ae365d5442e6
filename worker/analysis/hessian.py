"""Exact gradients, Hessian-vector products and Hessians of a model's loss.

Everything here works on one flat parameter vector ``theta`` of shape (P,), so
the loss is a plain function R^P -> R that ``torch.func`` can differentiate
twice. The helpers keep the dtype of ``theta``, and the analysis runs them
in float64.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from saddlepoint.spec import LossName
from worker.engine.losses import compute_loss

LossFunction = Callable[[Tensor], Tensor]


def flatten_parameters(
    model: nn.Module,
) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    """Flatten the model's parameters into one vector and return its inverse.

    Returns ``theta`` (P,), a detached copy of every parameter in
    ``model.named_parameters()`` order, and ``unflatten``, which splits a
    vector of shape (P,) into views shaped like those parameters, keyed by
    name, as :func:`torch.func.functional_call` expects.
    """
    names: list[str] = []
    shapes: list[torch.Size] = []
    pieces: list[Tensor] = []
    for name, parameter in model.named_parameters():
        names.append(name)
        shapes.append(parameter.shape)
        pieces.append(parameter.detach().reshape(-1))
    sizes = [shape.numel() for shape in shapes]
    theta = torch.cat(pieces) if pieces else torch.zeros(0)

    def unflatten(flat: Tensor) -> dict[str, Tensor]:
        chunks = torch.split(flat, sizes)
        return {
            name: chunk.view(shape)
            for name, chunk, shape in zip(names, chunks, shapes, strict=True)
        }

    return theta, unflatten


def make_loss_function(
    model: nn.Module, loss: LossName, inputs: Tensor, targets: Tensor
) -> LossFunction:
    """Build the map from flat parameters ``theta`` (P,) to the mean loss.

    The returned function evaluates ``model`` on all of ``inputs`` (N, ...)
    in one batch with :func:`torch.func.functional_call`, so its value is the
    mean loss over the N samples against class indices ``targets`` (N,). The
    model's buffers are passed through unchanged. ``theta`` must have the
    dtype and device of the model's parameters.

    Raises ValueError if the model is in training mode, because dropout or
    batch statistics would make the loss random or batch-dependent.
    """
    if model.training:
        raise ValueError(
            "call model.eval() before building the loss function, because the "
            "model is in training mode"
        )
    _, unflatten = flatten_parameters(model)
    buffers = {name: buffer.detach() for name, buffer in model.named_buffers()}

    def loss_function(theta: Tensor) -> Tensor:
        state = {**buffers, **unflatten(theta)}
        logits = functional_call(model, state, (inputs,))
        return compute_loss(loss, logits, targets)

    return loss_function


def gradient(f: LossFunction, theta: Tensor) -> Tensor:
    """Return the gradient of ``f`` at ``theta``, shape (P,), by reverse mode."""
    return grad(f)(theta)


def hessian_vector_product(f: LossFunction, theta: Tensor, v: Tensor) -> Tensor:
    """Return H v, the Hessian of ``f`` at ``theta`` times ``v``, shape (P,).

    Forward-over-reverse: the directional derivative (``jvp``) of the
    gradient function along ``v``, which is the second output of ``jvp``. It
    never forms H and costs a small constant times one gradient.
    """
    return jvp(grad(f), (theta,), (v,))[1]


def hessian_matrix(f: LossFunction, theta: Tensor, chunk_size: int = 256) -> Tensor:
    """Return the full Hessian of ``f`` at ``theta``, shape (P, P), symmetrized.

    Row i is H e_i, one Hessian-vector product with the i-th standard basis
    vector. ``torch.func.vmap`` batches ``chunk_size`` of these products at a
    time, so peak memory beyond the (P, P) result is about ``chunk_size``
    times that of one product. Rounding makes the rows differ slightly from
    the columns, so the result is (H + H^T) / 2. Cost: P Hessian-vector
    products.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    p = theta.numel()
    hessian = theta.new_empty((p, p))
    batched_product = vmap(lambda v: hessian_vector_product(f, theta, v))

    for start in range(0, p, chunk_size):
        stop = min(start + chunk_size, p)
        rows = torch.arange(stop - start, device=theta.device)
        basis = theta.new_zeros((stop - start, p))
        basis[rows, rows + start] = 1
        hessian[start:stop] = batched_product(basis)

    return (hessian + hessian.T) / 2
