"""learning_rate_at against values computed by hand.

Steps count from 0. Warmup gives base·(step + 1)/warmup_steps. After warmup,
cosine decays over the remaining updates to reach base·min_factor on the last
update, and the step schedule multiplies by gamma every step_size updates.
"""

import math

import pytest

from saddlepoint.schedules import learning_rate_at
from saddlepoint.spec import ConstantSchedule, CosineSchedule, StepSchedule

BASE = 0.4
Schedule = ConstantSchedule | CosineSchedule | StepSchedule


def rate(schedule: Schedule, step: int, total_steps: int) -> float:
    return learning_rate_at(schedule, BASE, step, total_steps)


def close(expected: float) -> object:
    return pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_constant_without_warmup() -> None:
    schedule = ConstantSchedule()

    assert rate(schedule, 0, 10) == BASE
    assert rate(schedule, 9, 10) == BASE
    assert rate(schedule, 25, 10) == BASE


def test_constant_with_warmup() -> None:
    schedule = ConstantSchedule(warmup_steps=4)

    assert rate(schedule, 0, 10) == close(0.1)
    assert rate(schedule, 1, 10) == close(0.2)
    assert rate(schedule, 3, 10) == close(0.4)
    assert rate(schedule, 4, 10) == close(0.4)
    assert rate(schedule, 9, 10) == close(0.4)
    assert rate(schedule, 30, 10) == close(0.4)


def test_cosine_without_warmup() -> None:
    # 11 updates: progress = step / 10, rate = 0.4·½(1 + cos(π·progress)).
    schedule = CosineSchedule()

    assert rate(schedule, 0, 11) == close(0.4)
    assert rate(schedule, 5, 11) == close(0.2)
    assert rate(schedule, 2, 11) == close(0.2 * (1 + math.cos(math.pi * 0.2)))
    assert rate(schedule, 10, 11) == close(0.0)
    assert rate(schedule, 20, 11) == close(0.0)


def test_cosine_min_factor() -> None:
    # The floor is 0.4·0.25 = 0.1, and halfway is 0.1 + 0.3·½ = 0.25.
    schedule = CosineSchedule(min_factor=0.25)

    assert rate(schedule, 0, 11) == close(0.4)
    assert rate(schedule, 5, 11) == close(0.25)
    assert rate(schedule, 10, 11) == close(0.1)
    assert rate(schedule, 100, 11) == close(0.1)


def test_cosine_with_warmup() -> None:
    # 3 warmup updates, then 9 decay updates: progress = (step − 3) / 8.
    schedule = CosineSchedule(warmup_steps=3)

    assert rate(schedule, 0, 12) == close(0.4 / 3)
    assert rate(schedule, 2, 12) == close(0.4)
    assert rate(schedule, 3, 12) == close(0.4)
    assert rate(schedule, 7, 12) == close(0.2)
    assert rate(schedule, 11, 12) == close(0.0)
    assert rate(schedule, 12, 12) == close(0.0)


def test_cosine_single_update_uses_base_rate() -> None:
    assert rate(CosineSchedule(), 0, 1) == close(0.4)


def test_step_without_warmup() -> None:
    schedule = StepSchedule(step_size=3, gamma=0.5)

    assert rate(schedule, 0, 10) == close(0.4)
    assert rate(schedule, 2, 10) == close(0.4)
    assert rate(schedule, 3, 10) == close(0.2)
    assert rate(schedule, 5, 10) == close(0.2)
    assert rate(schedule, 6, 10) == close(0.1)
    assert rate(schedule, 9, 10) == close(0.05)


def test_step_with_warmup() -> None:
    # Milestones count from the end of warmup: steps 2+4 = 6 and 2+8 = 10.
    schedule = StepSchedule(warmup_steps=2, step_size=4, gamma=0.1)

    assert rate(schedule, 0, 12) == close(0.2)
    assert rate(schedule, 1, 12) == close(0.4)
    assert rate(schedule, 2, 12) == close(0.4)
    assert rate(schedule, 5, 12) == close(0.4)
    assert rate(schedule, 6, 12) == close(0.04)
    assert rate(schedule, 10, 12) == close(0.004)
    assert rate(schedule, 11, 12) == close(0.004)


def test_step_past_end_keeps_final_value() -> None:
    schedule = StepSchedule(step_size=3, gamma=0.5)

    assert rate(schedule, 12, 10) == close(rate(schedule, 9, 10))


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSchedule(warmup_steps=0),
        CosineSchedule(warmup_steps=0),
        StepSchedule(warmup_steps=0, step_size=5),
    ],
    ids=["constant", "cosine", "step"],
)
def test_zero_warmup_starts_at_base_rate(schedule: Schedule) -> None:
    assert rate(schedule, 0, 10) == close(0.4)


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSchedule(warmup_steps=10),
        CosineSchedule(warmup_steps=10),
        StepSchedule(warmup_steps=10, step_size=2),
    ],
    ids=["constant", "cosine", "step"],
)
def test_warmup_longer_than_run(schedule: Schedule) -> None:
    # Every update of a 5-update run is still in a 10-update warmup.
    assert rate(schedule, 0, 5) == close(0.04)
    assert rate(schedule, 4, 5) == close(0.2)


def test_warmup_longer_than_run_past_end() -> None:
    schedule = CosineSchedule(warmup_steps=10)

    assert rate(schedule, 5, 5) == close(rate(schedule, 4, 5))
