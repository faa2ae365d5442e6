"""Learning-rate schedules as pure functions of the update index.

Pure Python, so the API can preview a schedule without torch and the worker
sets ``param_group["lr"]`` from the same numbers before every update.
Steps count from 0: step 0 is the first update. A rate depends only on the
schedule, the base rate, the step and the run's length, never on earlier
calls, so a resumed run continues exactly where it stopped.
"""

import bisect
import math

from saddlepoint.spec.schedule import (
    AnySchedule,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    InverseSqrtSchedule,
    LinearSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    StepSchedule,
)


def learning_rate_at(
    schedule: AnySchedule, base_rate: float, step: int, total_steps: int
) -> float:
    """Return the learning rate η(s) of update ``s = step`` of ``total_steps``.

    With base rate η₀ and ``W = warmup_steps``, warmup rises linearly::

        η(s) = η₀·(s + 1)/W                      for s < W

    so the first update is never wasted at rate zero and update ``W − 1``
    uses the full base rate. From ``s = W`` on, ``η(s) = η₀·f(s)``. Here
    ``u = s − W`` counts the updates since warmup and ``D = total_steps − W``
    is the number of decay updates. The progress ``p = min(u/(D − 1), 1)``,
    or 1 when ``D = 1``, reaches 1 on the last update::

        constant       f = 1
        step           f = γ^⌊u/step_size⌋
        multi_step     f = γ^(number of milestones ≤ u)
        exponential    f = γ^u
        cosine         f = m + (1 − m)·½·(1 + cos(π·p))      m = min_factor
        linear         f = 1 − (1 − e)·p                     e = end_factor
        inverse_sqrt   f = sqrt(W/(s + 1))

    so inverse_sqrt peaks at η₀ on update ``W − 1`` and falls as
    1/sqrt(s + 1) afterwards. ``one_cycle`` has its own shape, given in
    :func:`one_cycle_rate`. Steps past the last one keep its value, so a
    warmup longer than the run never reaches the base rate.

    Raises ValueError when ``step`` is negative or ``total_steps`` below 1.
    """
    if step < 0 or total_steps < 1:
        raise ValueError(
            f"need step >= 0 and total_steps >= 1, got step={step} "
            f"and total_steps={total_steps}"
        )
    step = min(step, total_steps - 1)
    if isinstance(schedule, OneCycleSchedule):
        return one_cycle_rate(schedule, base_rate, step, total_steps)

    warmup = schedule.warmup_steps
    if step < warmup:
        return base_rate * (step + 1) / warmup
    return base_rate * _decay_factor(schedule, step, total_steps)


def learning_rates(
    schedule: AnySchedule, base_rate: float, total_steps: int, start: int = 0
) -> list[float]:
    """Return the rates of updates ``start`` to ``total_steps − 1``, in order."""
    return [
        learning_rate_at(schedule, base_rate, step, total_steps)
        for step in range(start, total_steps)
    ]


def _decay_factor(schedule: AnySchedule, step: int, total_steps: int) -> float:
    """Return f(step) of :func:`learning_rate_at` for a step after warmup."""
    warmup = schedule.warmup_steps
    since_warmup = step - warmup
    match schedule:
        case ConstantSchedule():
            return 1.0
        case StepSchedule(step_size=step_size, gamma=gamma):
            return gamma ** (since_warmup // step_size)
        case MultiStepSchedule(milestones=milestones, gamma=gamma):
            return gamma ** bisect.bisect_right(milestones, since_warmup)
        case ExponentialSchedule(gamma=gamma):
            return gamma**since_warmup
        case CosineSchedule(min_factor=min_factor):
            progress = _decay_progress(since_warmup, total_steps - warmup)
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return min_factor + (1 - min_factor) * cosine
        case LinearSchedule(end_factor=end_factor):
            progress = _decay_progress(since_warmup, total_steps - warmup)
            return 1 - (1 - end_factor) * progress
        case InverseSqrtSchedule():
            return math.sqrt(warmup / (step + 1))
    raise TypeError(f"unknown schedule {schedule!r}")


def _decay_progress(since_warmup: int, decay_steps: int) -> float:
    """Return the decay progress p, which reaches 1 on the last update."""
    return min(since_warmup / max(decay_steps - 1, 1), 1.0)


def one_cycle_rate(
    schedule: OneCycleSchedule, base_rate: float, step: int, total_steps: int
) -> float:
    """Return the one-cycle rate of update ``step``, as PyTorch's OneCycleLR.

    The peak is the base rate η₀. The run starts at ``η₀/div_factor`` and
    ends at ``η_end = η₀/div_factor/final_div_factor``. With ``T`` updates
    and ``r = pct_start·T − 1`` (not rounded), both halves anneal by cosine,
    ``anneal(a, b, p) = b + (a − b)·½·(1 + cos(π·p))``::

        η(s) = anneal(η₀/div_factor, η₀, s/r)            for s ≤ r
        η(s) = anneal(η₀, η_end, (s − r)/(T − 1 − r))    for s > r

    This matches ``torch.optim.lr_scheduler.OneCycleLR`` with
    ``anneal_strategy="cos"`` and ``three_phase=False`` at ``last_epoch = s``
    (compared with torch 2.13 in the worker tests). When ``r = 0``, PyTorch
    raises ZeroDivisionError at s = 0, and here the first update takes the
    peak. Unlike OneCycleLR's default, momentum is not cycled.
    """
    initial = base_rate / schedule.div_factor
    final = initial / schedule.final_div_factor
    rise_end = schedule.pct_start * total_steps - 1
    if step <= rise_end:
        progress = step / rise_end if rise_end > 0 else 1.0
        return _anneal(initial, base_rate, progress)
    progress = (step - rise_end) / (total_steps - 1 - rise_end)
    return _anneal(base_rate, final, progress)


def _anneal(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
