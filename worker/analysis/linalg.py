"""Vector helpers and operator plumbing shared by the iterative estimators.

The estimators in :mod:`worker.analysis.lanczos`, :mod:`worker.analysis.trace`
and :mod:`worker.analysis.density` see the Hessian only through a
Hessian-vector product ``hvp`` that maps a vector of shape (P,) to one of
shape (P,). This module counts those products, draws reproducible random
vectors and orthogonalizes against a Krylov basis. It also offers a
double-backward Hessian-vector product, which measured faster than the
forward-over-reverse one in :mod:`worker.analysis.hessian` for one product at
a time.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from worker.analysis.hessian import LossFunction

HessianVectorProduct = Callable[[Tensor], Tensor]
GeneratorOrSeed = torch.Generator | int


class CountingOperator:
    """A Hessian-vector product that counts its calls and checks its output.

    Each call maps ``v`` (P,) to ``hvp(v)`` (P,) and adds one to ``count``.
    Raises ValueError when ``v`` or the product does not have shape (P,),
    and when the product has NaN or infinite entries, so a broken operator
    cannot feed garbage into an estimator.
    """

    def __init__(self, hvp: HessianVectorProduct, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self.hvp = hvp
        self.dim = dim
        self.count = 0

    def __call__(self, v: Tensor) -> Tensor:
        if v.shape != (self.dim,):
            raise ValueError(
                f"expected a vector of shape ({self.dim},), got {tuple(v.shape)}"
            )
        product = self.hvp(v)
        self.count += 1
        if product.shape != (self.dim,):
            raise ValueError(
                f"the Hessian-vector product returned shape {tuple(product.shape)} "
                f"for an input of shape ({self.dim},); it must map (P,) to (P,)"
            )
        if not bool(torch.isfinite(product).all()):
            raise ValueError(
                f"Hessian-vector product number {self.count} has NaN or infinite "
                "entries; check the loss and parameters for overflow"
            )
        return product


def make_generator(generator: GeneratorOrSeed) -> torch.Generator:
    """Return ``generator`` itself, or a new CPU generator seeded with the int."""
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(generator)


def random_vectors(
    count: int,
    dim: int,
    *,
    distribution: str,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Draw ``count`` random vectors, shape (count, dim), on ``device``.

    ``distribution`` is ``"rademacher"`` (entries +1 or -1 with probability
    1/2 each) or ``"gaussian"`` (standard normal entries). The draw happens on
    the generator's own device and is then copied, so a seed gives the same
    vectors whatever ``device`` is.
    """
    shape = (count, dim)
    if distribution == "gaussian":
        values = torch.randn(shape, generator=generator, device=generator.device)
    elif distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        values = 2 * bits - 1
    else:
        raise ValueError(
            f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}"
        )
    return values.to(device=device, dtype=dtype)


def inner(u: Tensor, v: Tensor) -> float:
    """Return the Euclidean inner product of two vectors of shape (P,)."""
    return float(torch.dot(u, v))


def normalize(v: Tensor) -> tuple[Tensor, float]:
    """Return ``v / ||v||`` and the Euclidean norm ``||v||``.

    Returns the zero vector with norm 0 when ``v`` is zero, so the caller
    decides what a zero vector means (a breakdown, an exhausted space).
    """
    norm = float(torch.linalg.vector_norm(v))
    if norm == 0.0:
        return torch.zeros_like(v), 0.0
    return v / norm, norm


def orthogonalize(v: Tensor, basis: Tensor) -> Tensor:
    """Remove from ``v`` (P,) its components along the rows of ``basis`` (m, P).

    The rows of ``basis`` must be orthonormal. Classical Gram–Schmidt,
    ``v <- v - basis^T (basis v)``, runs twice ("twice is enough"). One pass
    can leave a component far above machine epsilon when ``v`` lies almost in
    the span of the basis. That is the usual case in Lanczos once Ritz
    vectors converge, and the second pass brings it down to rounding level.
    Cost: 4 m P
    multiply-adds and no Hessian-vector product. An empty basis returns ``v``.
    """
    if basis.shape[0] == 0:
        return v
    for _ in range(2):
        v = v - basis.T @ (basis @ v)
    return v


def hessian_vector_product_double_backward(
    f: LossFunction, theta: Tensor, v: Tensor
) -> Tensor:
    """Return H v, the Hessian of ``f`` at ``theta`` times ``v``, shape (P,).

    Reverse-over-reverse ("double backward"): build the gradient g(theta) with
    ``create_graph=True``, then differentiate g . v once more with
    :func:`torch.autograd.grad`. Agrees with
    :func:`worker.analysis.hessian.hessian_vector_product` to rounding. Cost:
    one forward pass, one backward pass that records its graph, and one
    backward pass through that graph. For many products at the same
    ``theta``, :func:`make_double_backward_operator` builds the gradient only
    once.
    """
    point = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(point), point, create_graph=True)
    (product,) = torch.autograd.grad(grad, point, grad_outputs=v)
    return product.detach()


def make_double_backward_operator(
    f: LossFunction, theta: Tensor
) -> HessianVectorProduct:
    """Build ``v -> H v`` at a fixed ``theta`` (P,), recording the gradient once.

    The gradient g(theta) and its autograd graph are built here, with one
    forward and one backward pass. Each call of the returned function is then
    a single backward pass of g . v through the retained graph, the cheapest
    of the methods measured for sequential products such as Lanczos steps.
    The graph stays in memory, about the activations of one forward pass over
    all samples, for as long as the returned function is referenced.
    """
    point = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(point), point, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        (product,) = torch.autograd.grad(grad, point, grad_outputs=v, retain_graph=True)
        return product.detach()

    return hvp
