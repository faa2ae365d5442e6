"""Optimizers built from a spec, as the PyTorch implementations define them."""

from collections.abc import Iterable

import torch

from saddlepoint.spec import AdamSpec, SgdSpec


def build_optimizer(
    spec: SgdSpec | AdamSpec, params: Iterable[torch.Tensor]
) -> torch.optim.Optimizer:
    """Build ``torch.optim.SGD`` or ``torch.optim.Adam`` over ``params``.

    With gradient ``g`` of parameter ``θ`` at update ``t = 1, 2, ...``, learning
    rate ``η`` and weight decay ``λ``, both first add L2 decay to the gradient
    (coupled, not AdamW's decoupled form): ``g ← g + λ·θ``.

    SGD with momentum ``μ`` keeps a buffer ``b`` that starts as ``b_1 = g_1``::

        b ← μ·b + g
        d ← g + μ·b    (Nesterov)   or   d ← b    (plain momentum)
        θ ← θ − η·d

    With ``μ = 0`` this is ``θ ← θ − η·g``. This is PyTorch's buffer form, in
    which ``η`` multiplies the buffer, unlike the Sutskever et al. (2013) form
    ``v ← μ·v − η·g``. The two agree while ``η`` is constant, but a schedule
    that changes ``η`` rescales the whole buffer at once here.

    Adam with ``(β1, β2)`` and ``ε`` (Kingma and Ba, 2015), moments starting at 0::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        θ ← θ − η · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

    The learning rate given here is the base rate. The training loop overwrites
    ``param_group["lr"]`` before every update to follow the schedule.
    """
    match spec:
        case SgdSpec():
            return torch.optim.SGD(
                params,
                lr=spec.learning_rate,
                momentum=spec.momentum,
                nesterov=spec.nesterov,
                weight_decay=spec.weight_decay,
            )
        case AdamSpec():
            return torch.optim.Adam(
                params,
                lr=spec.learning_rate,
                betas=spec.betas,
                eps=spec.eps,
                weight_decay=spec.weight_decay,
            )
    raise TypeError(f"unknown optimizer spec {spec!r}")
