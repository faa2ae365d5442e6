"""Optimizers built from a spec: PyTorch's implementations and textbook forms.

Throughout, θ is a parameter, g its gradient at update t = 1, 2, ..., η the
learning rate of that update (the schedule's value), λ the weight decay and ε
the constant that keeps a denominator above zero. Every optimizer except
AdamW first adds the L2 penalty to the gradient, ``g ← g + λ·θ``.

``variant="pytorch"`` builds the ``torch.optim`` class. ``variant="textbook"``
builds one of the small subclasses below, whose docstrings show both
recurrences. Adam and AdamW follow Kingma and Ba (2015) in PyTorch already, so
they have no variant.
"""

from collections.abc import Callable, Iterable

import torch

from saddlepoint.spec.optim import (
    AdagradSpec,
    AdamSpec,
    AdamWSpec,
    AnyOptimizerSpec,
    OptimizerVariant,
    RMSpropSpec,
    SgdSpec,
)

Closure = Callable[[], float]


def build_optimizer(
    spec: AnyOptimizerSpec, params: Iterable[torch.Tensor]
) -> torch.optim.Optimizer:
    """Build the optimizer of ``spec`` over ``params`` at the base learning rate.

    SGD with momentum μ in PyTorch keeps a buffer b that starts as b = g::

        b ← μ·b + g
        d ← g + μ·b    (Nesterov)   or   d ← b    (plain momentum)
        θ ← θ − η·d

    Adam with (β1, β2), moments starting at 0, is RMSProp plus momentum with
    both averages corrected for their start at zero::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        θ ← θ − η · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

    ``adam`` adds λ·θ to g, so the decay is divided by sqrt(v) like the rest
    of the gradient. ``adamw`` leaves g alone and shrinks θ before the step
    above, ``θ ← θ − η·λ·θ``, so every weight decays at the same rate.

    The training loop overwrites ``param_group["lr"]`` before every update to
    follow the schedule.
    """
    textbook = getattr(spec, "variant", None) == OptimizerVariant.TEXTBOOK
    match spec:
        case SgdSpec():
            sgd_class = TextbookSGD if textbook else torch.optim.SGD
            return sgd_class(
                params,
                lr=spec.learning_rate,
                momentum=spec.momentum,
                nesterov=spec.nesterov,
                weight_decay=spec.weight_decay,
            )
        case AdagradSpec():
            adagrad_class = TextbookAdagrad if textbook else torch.optim.Adagrad
            return adagrad_class(
                params,
                lr=spec.learning_rate,
                eps=spec.eps,
                weight_decay=spec.weight_decay,
            )
        case RMSpropSpec():
            rmsprop_class = TextbookRMSprop if textbook else torch.optim.RMSprop
            return rmsprop_class(
                params,
                lr=spec.learning_rate,
                alpha=spec.alpha,
                eps=spec.eps,
                weight_decay=spec.weight_decay,
            )
        case AdamSpec() | AdamWSpec():
            adam_class = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
            return adam_class(
                params,
                lr=spec.learning_rate,
                betas=spec.betas,
                eps=spec.eps,
                weight_decay=spec.weight_decay,
            )
    raise TypeError(f"unknown optimizer spec {spec!r}")


class TextbookSGD(torch.optim.Optimizer):
    """SGD whose momentum accumulates steps (movements), not gradients.

    Textbook, with movement m starting at 0 (classical momentum in
    Sutskever et al., 2013)::

        m ← μ·m − η·g
        θ ← θ + m                  (plain momentum)
        θ ← θ + μ·m − η·g          (Nesterov)

    Nesterov's method takes g at the look-ahead point θ + μ·m. The Nesterov
    line stores that look-ahead point as θ, so g is the gradient at the
    stored parameters, as in PyTorch.

    against PyTorch's ``b ← μ·b + g``, ``θ ← θ − η·b``. While η is constant,
    m = −η·b after every update and the two agree. When a schedule changes η,
    PyTorch rescales the whole buffer by the new η at once, while here only
    the newest gradient gets it and older steps keep the rate they had.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> float | None:  # type: ignore[override]
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in _params_with_grad(group):
                grad = _decayed_gradient(param, group["weight_decay"])
                movement = _zero_state(self.state[param], "movement", param)
                movement.mul_(momentum).sub_(grad, alpha=lr)
                if group["nesterov"]:
                    param.add_(movement, alpha=momentum).sub_(grad, alpha=lr)
                else:
                    param.add_(movement)
        return loss


class TextbookAdagrad(torch.optim.Optimizer):
    """Adagrad that divides by the root mean square of all past gradients.

    Textbook, counting gradients from 0 so σ⁰ = |g⁰|::

        σᵗ = sqrt(1/(t + 1) · Σᵢ₌₀ᵗ (gⁱ)²)
        θ ← θ − η·gᵗ/(σᵗ + ε)

    against PyTorch's root of the plain sum, ``θ ← θ − η·g/(sqrt(Σ g²) + ε)``.
    Ignoring ε, the textbook step is sqrt(t + 1) times PyTorch's. The two then
    agree when the textbook rate decays as η/sqrt(t + 1), which the
    ``inverse_sqrt`` schedule with ``warmup_steps=1`` gives.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> float | None:  # type: ignore[override]
        loss = _evaluate(closure)
        for group in self.param_groups:
            for param in _params_with_grad(group):
                grad = _decayed_gradient(param, group["weight_decay"])
                state = self.state[param]
                state["step"] = state.get("step", 0) + 1
                square_sum = _zero_state(state, "square_sum", param)
                square_sum.addcmul_(grad, grad)
                sigma = square_sum.div(state["step"]).sqrt_().add_(group["eps"])
                param.addcdiv_(grad, sigma, value=-group["lr"])
        return loss


class TextbookRMSprop(torch.optim.Optimizer):
    """RMSProp whose running average starts at the first squared gradient.

    Textbook, with σ⁰ = |g⁰|::

        σᵗ = sqrt(α·(σᵗ⁻¹)² + (1 − α)·(gᵗ)²)
        θ ← θ − η·gᵗ/(σᵗ + ε)

    against PyTorch's ``v ← α·v + (1 − α)·g²`` from v = 0, ``θ ← θ −
    η·g/(sqrt(v) + ε)``. PyTorch's first average is (1 − α)·g², so up to ε
    its first step is 1/sqrt(1 − α) times the textbook's (10 times for
    α = 0.99). Fed the same gradients, the two averages differ by
    α^(t+1)·(g⁰)² after update t, so the gap fades.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> float | None:  # type: ignore[override]
        loss = _evaluate(closure)
        for group in self.param_groups:
            alpha = group["alpha"]
            for param in _params_with_grad(group):
                grad = _decayed_gradient(param, group["weight_decay"])
                state = self.state[param]
                if "square_avg" in state:
                    square_avg = state["square_avg"]
                    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                else:
                    square_avg = state["square_avg"] = grad.square()
                sigma = square_avg.sqrt().add_(group["eps"])
                param.addcdiv_(grad, sigma, value=-group["lr"])
        return loss


def _evaluate(closure: Closure | None) -> float | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _params_with_grad(group: dict) -> list[torch.Tensor]:
    return [param for param in group["params"] if param.grad is not None]


def _decayed_gradient(param: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """Return g + λ·θ as a new tensor, leaving ``param.grad`` unchanged."""
    assert param.grad is not None
    return param.grad.add(param, alpha=weight_decay)


def _zero_state(state: dict, key: str, param: torch.Tensor) -> torch.Tensor:
    """Return ``state[key]``, created as zeros shaped like ``param`` on first use."""
    if key not in state:
        state[key] = torch.zeros_like(param, memory_format=torch.preserve_format)
    tensor: torch.Tensor = state[key]
    return tensor
