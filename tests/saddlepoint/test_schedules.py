"""learning_rate_at against values computed by hand.

Steps count from 0. Warmup gives base·(step + 1)/warmup_steps. After warmup,
cosine and linear decay over the remaining updates and reach their floor on
the last update. Step and multi_step multiply by gamma at milestones counted
from the end of warmup, and exponential multiplies by gamma every update.
Inverse_sqrt falls as base·sqrt(warmup/(step + 1)), and one_cycle follows
PyTorch's OneCycleLR.
"""

import math
from typing import Any

import pytest
from pydantic import ValidationError

from saddlepoint.schedules import learning_rate_at, learning_rates
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

BASE = 0.4
Schedule = AnySchedule


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


def test_multi_step_without_warmup() -> None:
    schedule = MultiStepSchedule(milestones=[2, 5], gamma=0.5)

    assert rate(schedule, 0, 10) == close(0.4)
    assert rate(schedule, 1, 10) == close(0.4)
    assert rate(schedule, 2, 10) == close(0.2)
    assert rate(schedule, 4, 10) == close(0.2)
    assert rate(schedule, 5, 10) == close(0.1)
    assert rate(schedule, 9, 10) == close(0.1)
    assert rate(schedule, 50, 10) == close(0.1)


def test_multi_step_with_warmup() -> None:
    # Milestones count from the end of warmup: steps 3+2 = 5 and 3+5 = 8.
    schedule = MultiStepSchedule(warmup_steps=3, milestones=[2, 5], gamma=0.5)

    assert rate(schedule, 0, 10) == close(0.4 / 3)
    assert rate(schedule, 2, 10) == close(0.4)
    assert rate(schedule, 4, 10) == close(0.4)
    assert rate(schedule, 5, 10) == close(0.2)
    assert rate(schedule, 7, 10) == close(0.2)
    assert rate(schedule, 8, 10) == close(0.1)
    assert rate(schedule, 9, 10) == close(0.1)


def test_multi_step_milestone_past_end_never_reached() -> None:
    schedule = MultiStepSchedule(milestones=[3, 100], gamma=0.1)

    assert rate(schedule, 9, 10) == close(0.04)


def test_exponential_without_warmup() -> None:
    schedule = ExponentialSchedule(gamma=0.5)

    assert learning_rates(schedule, BASE, 5) == [
        close(0.4),
        close(0.2),
        close(0.1),
        close(0.05),
        close(0.025),
    ]
    assert rate(schedule, 8, 5) == close(0.025)


def test_exponential_with_warmup() -> None:
    schedule = ExponentialSchedule(warmup_steps=2, gamma=0.5)

    assert learning_rates(schedule, BASE, 5) == [
        close(0.2),
        close(0.4),
        close(0.4),
        close(0.2),
        close(0.1),
    ]


def test_linear_without_warmup() -> None:
    # 5 updates, progress step/4, rate 0.4·(1 − 0.75·progress).
    schedule = LinearSchedule(end_factor=0.25)

    assert learning_rates(schedule, BASE, 5) == [
        close(0.4),
        close(0.325),
        close(0.25),
        close(0.175),
        close(0.1),
    ]
    assert rate(schedule, 7, 5) == close(0.1)


def test_linear_with_warmup_to_zero() -> None:
    # 2 warmup updates, then 5 decay updates: progress (step − 2)/4.
    schedule = LinearSchedule(warmup_steps=2)

    assert rate(schedule, 0, 7) == close(0.2)
    assert rate(schedule, 1, 7) == close(0.4)
    assert rate(schedule, 2, 7) == close(0.4)
    assert rate(schedule, 4, 7) == close(0.2)
    assert rate(schedule, 6, 7) == close(0.0)


def test_linear_single_update_uses_base_rate() -> None:
    assert rate(LinearSchedule(), 0, 1) == close(0.4)


def test_inverse_sqrt_rises_then_falls() -> None:
    # Warmup 0.1, 0.2, 0.3, 0.4, then 0.4·sqrt(4/(step + 1)).
    schedule = InverseSqrtSchedule(warmup_steps=4)

    assert rate(schedule, 0, 100) == close(0.1)
    assert rate(schedule, 2, 100) == close(0.3)
    assert rate(schedule, 3, 100) == close(0.4)
    assert rate(schedule, 4, 100) == close(0.4 * math.sqrt(4 / 5))
    assert rate(schedule, 15, 100) == close(0.2)
    assert rate(schedule, 99, 100) == close(0.08)
    assert rate(schedule, 150, 100) == close(0.08)


def test_inverse_sqrt_one_warmup_step() -> None:
    # warmup_steps=1 gives base/sqrt(step + 1) from the first update.
    schedule = InverseSqrtSchedule(warmup_steps=1)

    assert rate(schedule, 0, 10) == close(0.4)
    assert rate(schedule, 3, 10) == close(0.2)
    assert rate(schedule, 8, 10) == close(0.4 / 3)


def test_one_cycle_by_hand() -> None:
    # Peak 0.4, start 0.4/4 = 0.1, end 0.1/10 = 0.01. With 10 updates and
    # pct_start 0.2 the peak is at r = 0.2·10 − 1 = 1, and the fall takes
    # 10 − 1 − 1 = 8 updates, halfway at step 5.
    schedule = OneCycleSchedule(pct_start=0.2, div_factor=4, final_div_factor=10)
    fall_quarter = 0.01 + 0.39 * 0.5 * (1 + math.cos(math.pi / 4))

    assert rate(schedule, 0, 10) == close(0.1)
    assert rate(schedule, 1, 10) == close(0.4)
    assert rate(schedule, 3, 10) == close(fall_quarter)
    assert rate(schedule, 5, 10) == close(0.205)
    assert rate(schedule, 9, 10) == close(0.01)
    assert rate(schedule, 12, 10) == close(0.01)


def test_one_cycle_rise_midpoint() -> None:
    # 10 updates, pct_start 0.3: peak at r = 2, so step 1 is halfway up.
    schedule = OneCycleSchedule(pct_start=0.3, div_factor=4)

    assert rate(schedule, 1, 10) == close(0.25)
    assert rate(schedule, 2, 10) == close(0.4)


def test_one_cycle_peak_at_first_update() -> None:
    # pct_start·T = 1 puts the peak at r = 0, where the rise has no length.
    schedule = OneCycleSchedule(pct_start=0.1, div_factor=4, final_div_factor=10)

    assert rate(schedule, 0, 10) == close(0.4)
    assert rate(schedule, 9, 10) == close(0.01)


def test_one_cycle_shorter_than_one_rise_step() -> None:
    # r = 0.3·2 − 1 = −0.4 < 0: both updates are on the fall, from −0.4.
    schedule = OneCycleSchedule(pct_start=0.3, div_factor=4, final_div_factor=10)
    progress = 0.4 / 1.4
    expected = 0.01 + 0.39 * 0.5 * (1 + math.cos(math.pi * progress))

    assert rate(schedule, 0, 2) == close(expected)
    assert rate(schedule, 1, 2) == close(0.01)


ALL_SCHEDULES: list[Schedule] = [
    ConstantSchedule(warmup_steps=3),
    StepSchedule(warmup_steps=3, step_size=4, gamma=0.5),
    MultiStepSchedule(warmup_steps=3, milestones=[2, 7, 11], gamma=0.3),
    ExponentialSchedule(warmup_steps=3, gamma=0.9),
    CosineSchedule(warmup_steps=3, min_factor=0.1),
    LinearSchedule(warmup_steps=3, end_factor=0.2),
    InverseSqrtSchedule(warmup_steps=3),
    OneCycleSchedule(pct_start=0.25),
]
ALL_IDS = [
    "constant",
    "step",
    "multi_step",
    "exponential",
    "cosine",
    "linear",
    "inverse_sqrt",
    "one_cycle",
]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=ALL_IDS)
@pytest.mark.parametrize("resume_at", [0, 1, 3, 10, 19])
def test_resuming_mid_schedule_continues_sequence(
    schedule: Schedule, resume_at: int
) -> None:
    full = learning_rates(schedule, BASE, 20)

    resumed = learning_rates(schedule, BASE, 20, start=resume_at)

    assert resumed == full[resume_at:]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=ALL_IDS)
def test_rate_independent_of_call_order(schedule: Schedule) -> None:
    forward = [rate(schedule, step, 20) for step in range(20)]
    backward = [rate(schedule, step, 20) for step in reversed(range(20))]

    assert backward[::-1] == forward


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=ALL_IDS)
def test_past_end_keeps_last_value(schedule: Schedule) -> None:
    last = rate(schedule, 19, 20)

    assert rate(schedule, 20, 20) == last
    assert rate(schedule, 1000, 20) == last


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=ALL_IDS)
def test_rates_positive_and_at_most_base(schedule: Schedule) -> None:
    rates = learning_rates(schedule, BASE, 20)

    assert len(rates) == 20
    assert all(0 < value <= BASE * (1 + 1e-12) for value in rates)


DECAY_SCHEDULES: list[Schedule] = [
    ConstantSchedule(),
    StepSchedule(step_size=2),
    MultiStepSchedule(milestones=[1]),
    ExponentialSchedule(),
    CosineSchedule(),
    LinearSchedule(),
]
DECAY_IDS = ["constant", "step", "multi_step", "exponential", "cosine", "linear"]


@pytest.mark.parametrize("schedule", DECAY_SCHEDULES, ids=DECAY_IDS)
def test_zero_warmup_first_update_at_base(schedule: Schedule) -> None:
    assert rate(schedule, 0, 10) == close(0.4)


@pytest.mark.parametrize("schedule", DECAY_SCHEDULES, ids=DECAY_IDS)
def test_warmup_end_reaches_base_before_decay(schedule: Schedule) -> None:
    warmed = schedule.model_copy(update={"warmup_steps": 4})

    assert rate(warmed, 0, 10) == close(0.1)
    assert rate(warmed, 3, 10) == close(0.4)
    assert rate(warmed, 4, 10) == close(0.4)


@pytest.mark.parametrize("schedule", DECAY_SCHEDULES, ids=DECAY_IDS)
def test_every_decay_warmup_longer_than_run(schedule: Schedule) -> None:
    warmed = schedule.model_copy(update={"warmup_steps": 10})

    assert learning_rates(warmed, BASE, 4) == [
        close(0.04),
        close(0.08),
        close(0.12),
        close(0.16),
    ]
    assert rate(warmed, 9, 4) == close(0.16)


def test_inverse_sqrt_warmup_longer_than_run() -> None:
    schedule = InverseSqrtSchedule(warmup_steps=10)

    assert rate(schedule, 4, 5) == close(0.2)
    assert rate(schedule, 30, 5) == close(0.2)


@pytest.mark.parametrize(("step", "total_steps"), [(-1, 10), (0, 0), (3, -2)])
def test_invalid_step_or_length_rejected(step: int, total_steps: int) -> None:
    with pytest.raises(ValueError, match="step >= 0 and total_steps >= 1"):
        rate(ConstantSchedule(), step, total_steps)


def test_learning_rates_from_start() -> None:
    schedule = ExponentialSchedule(gamma=0.5)

    assert learning_rates(schedule, BASE, 4, start=2) == [close(0.1), close(0.05)]
    assert learning_rates(schedule, BASE, 4, start=4) == []


INVALID_SCHEDULES: list[tuple[type[Any], dict[str, Any], str, str]] = [
    (MultiStepSchedule, {"milestones": [5, 3]}, "milestones", "not strictly"),
    (MultiStepSchedule, {"milestones": [2, 2]}, "milestones", "remove duplicates"),
    (MultiStepSchedule, {"milestones": []}, "milestones", "at least 1"),
    (MultiStepSchedule, {"milestones": [0]}, "milestones", "greater than or equal"),
    (MultiStepSchedule, {"milestones": list(range(1, 102))}, "milestones", "100"),
    (ExponentialSchedule, {"gamma": 0}, "gamma", "greater than 0"),
    (LinearSchedule, {"end_factor": 1.5}, "end_factor", "less than or equal to 1"),
    (InverseSqrtSchedule, {"warmup_steps": 0}, "warmup_steps", "use 1 or more"),
    (InverseSqrtSchedule, {"warmup_steps": -3}, "warmup_steps", "use 1 or more"),
    (OneCycleSchedule, {"warmup_steps": 5}, "warmup_steps", "set warmup_steps to 0"),
    (OneCycleSchedule, {"pct_start": 1.0}, "pct_start", "less than 1"),
    (OneCycleSchedule, {"div_factor": 0.5}, "div_factor", "greater than or equal"),
    (CosineSchedule, {"warmup": 5}, "warmup", "Extra inputs"),
]


@pytest.mark.parametrize(
    ("spec_class", "fields", "field", "fragment"), INVALID_SCHEDULES
)
def test_invalid_schedule_names_field(
    spec_class: type[Any], fields: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        spec_class.model_validate(fields)

    errors = caught.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"][0] == field
    assert fragment in errors[0]["msg"]


def test_milestone_error_shows_values() -> None:
    with pytest.raises(ValidationError) as caught:
        MultiStepSchedule(milestones=[1, 4, 3])

    message = caught.value.errors()[0]["msg"]
    assert "[1, 4, 3]" in message
    assert "3 follows 4" in message
