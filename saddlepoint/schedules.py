"""Learning-rate schedules as pure functions of the update index.

Pure Python, so the API can preview a schedule without torch and the worker
sets ``param_group["lr"]`` from the same numbers before every update.
Steps count from 0: step 0 is the first update.
"""

import math

from saddlepoint.spec import (
    ConstantSchedule,
    CosineSchedule,
    ScheduleSpec,
    StepSchedule,
)


def learning_rate_at(
    schedule: ScheduleSpec, base_rate: float, step: int, total_steps: int
) -> float:
    """Return the learning rate for update ``step`` of a run of ``total_steps``.

    Warmup rises linearly, ``base_rate * (step + 1) / warmup_steps``, so the
    first update is never wasted at rate zero and the last warmup update uses
    the full base rate. Decay then runs over the remaining updates. Steps past
    the last one keep its value, so a warmup longer than the run never reaches
    the base rate.
    """
    step = min(step, max(total_steps - 1, 0))
    warmup = schedule.warmup_steps
    if step < warmup:
        return base_rate * (step + 1) / warmup

    since_warmup = step - warmup
    decay_steps = max(total_steps - warmup, 1)
    match schedule:
        case ConstantSchedule():
            return base_rate
        case CosineSchedule(min_factor=min_factor):
            # The cosine reaches its floor on the last update, not one past it.
            progress = min(since_warmup / max(decay_steps - 1, 1), 1.0)
            floor = base_rate * min_factor
            return floor + (base_rate - floor) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        case StepSchedule(step_size=step_size, gamma=gamma):
            return base_rate * gamma ** (since_warmup // step_size)
    raise TypeError(f"unknown schedule {schedule!r}")
