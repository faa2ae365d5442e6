"""Sweep expansion: grid products, override lists, paths and child validation."""

from typing import Any

import pytest
from pydantic import ValidationError

from saddlepoint.spec import Limits
from saddlepoint.spec.sweep import (
    InvalidSweep,
    SweepSpec,
    SweepTooLarge,
    path_error,
    plan_sweep,
)

LIMITS = Limits(max_exact_parameters=5000, max_total_steps=1_000_000)


def plan(body: dict[str, Any], max_children: int = 256) -> list[Any]:
    return plan_sweep(SweepSpec.model_validate(body), max_children, LIMITS)


def problems_of(body: dict[str, Any], max_children: int = 256) -> list[Any]:
    with pytest.raises(InvalidSweep) as caught:
        plan(body, max_children)
    return caught.value.problems


def test_grid_is_cartesian_product_last_fastest() -> None:
    children = plan(
        {
            "grid": {
                "optimizer.learning_rate": [0.1, 0.01],
                "batch_size": [8, 32, "full"],
            }
        }
    )
    assert len(children) == 6
    assert [child.index for child in children] == list(range(6))
    assert [child.values for child in children[:3]] == [
        {"optimizer.learning_rate": 0.1, "batch_size": 8},
        {"optimizer.learning_rate": 0.1, "batch_size": 32},
        {"optimizer.learning_rate": 0.1, "batch_size": "full"},
    ]
    assert children[3].spec.optimizer.learning_rate == 0.01
    assert children[5].spec.batch_size == "full"


def test_child_count_without_expanding() -> None:
    sweep = SweepSpec.model_validate(
        {"grid": {"seed": list(range(1000)), "epochs": list(range(1, 1001))}}
    )
    assert sweep.child_count == 1_000_000


def test_base_fields_carry_into_children() -> None:
    children = plan(
        {
            "base": {"dataset": {"name": "iris"}, "epochs": 3, "seed": 7},
            "grid": {"seed": [1, 2]},
        }
    )
    assert [child.spec.seed for child in children] == [1, 2]
    assert all(child.spec.dataset.name == "iris" for child in children)
    assert all(child.spec.epochs == 3 for child in children)


def test_override_list_in_order() -> None:
    children = plan(
        {
            "overrides": [
                {},
                {"optimizer.momentum": 0.9},
                {"optimizer": {"name": "adam", "learning_rate": 0.001}},
            ]
        }
    )
    assert len(children) == 3
    assert children[0].spec.optimizer.name == "sgd"
    assert children[1].spec.optimizer.momentum == 0.9
    assert children[2].spec.optimizer.name == "adam"
    assert list(children[0].values) == ["optimizer.momentum", "optimizer"]


def test_override_values_are_effective_values() -> None:
    children = plan(
        {
            "overrides": [
                {"optimizer.momentum": 0.9},
                {"optimizer": {"name": "adam"}},
            ]
        }
    )
    # The first child keeps the default optimizer; adam has no momentum field.
    assert children[0].values["optimizer"]["name"] == "sgd"
    assert children[1].values["optimizer.momentum"] is None


def test_whole_object_then_nested_path() -> None:
    children = plan(
        {
            "grid": {
                "optimizer.learning_rate": [0.01, 0.001],
                "optimizer": [{"name": "adam", "betas": [0.8, 0.9]}],
            }
        }
    )
    assert [child.spec.optimizer.name for child in children] == ["adam", "adam"]
    assert [child.spec.optimizer.learning_rate for child in children] == [
        0.01,
        0.001,
    ]
    assert children[0].spec.optimizer.betas == (0.8, 0.9)


def test_name_change_keeps_base_fields() -> None:
    children = plan(
        {
            "base": {"optimizer": {"name": "sgd", "learning_rate": 0.05}},
            "grid": {"optimizer.name": ["sgd", "adam"]},
        }
    )
    assert children[1].spec.optimizer.name == "adam"
    assert children[1].spec.optimizer.learning_rate == 0.05


def test_nested_path_into_default_object() -> None:
    children = plan({"grid": {"schedule.warmup_steps": [0, 10]}})
    assert [child.spec.schedule.warmup_steps for child in children] == [0, 10]
    assert all(child.spec.schedule.name == "constant" for child in children)


def test_children_named_after_values() -> None:
    children = plan({"name": "lr", "grid": {"optimizer.learning_rate": [0.5]}})
    assert children[0].spec.name == "lr [optimizer.learning_rate=0.5]"
    unnamed = plan({"overrides": [{}, {"name": "mine"}]})
    assert unnamed[0].spec.name is None
    assert unnamed[1].spec.name == "mine"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"grid": {"seed": [1]}, "overrides": [{"seed": 1}]},
        {"grid": {}},
        {"grid": {"seed": []}},
        {"overrides": []},
        {"grid": {"seed": [1]}, "learning_rate": 0.1},
    ],
)
def test_sweep_shape_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SweepSpec.model_validate(body)


def test_grid_over_limit_is_too_large() -> None:
    with pytest.raises(SweepTooLarge) as caught:
        plan({"grid": {"seed": list(range(20)), "epochs": [1, 2]}}, max_children=39)
    problem = caught.value.problems[0]
    assert problem.field == "grid"
    assert problem.value == 40
    assert "40 children" in problem.message
    assert "at most 39" in problem.message
    assert "20 x 2" in problem.message


def test_override_list_over_limit_is_too_large() -> None:
    with pytest.raises(SweepTooLarge) as caught:
        plan({"overrides": [{}, {}, {}]}, max_children=2)
    assert caught.value.problems[0].field == "overrides"


def test_limit_exactly_reached_is_accepted() -> None:
    assert len(plan({"grid": {"seed": [1, 2, 3]}}, max_children=3)) == 3


def test_unknown_path_suggests_fields() -> None:
    problems = problems_of({"grid": {"optimizer.learning_rat": [0.1]}})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.field == "grid.optimizer.learning_rat"
    assert problem.child is None
    assert "did you mean 'optimizer.learning_rate'" in problem.message
    assert "learning_rate" in problem.message
    assert "momentum" in problem.message


def test_unknown_top_level_path_lists_spec_fields() -> None:
    problems = problems_of({"overrides": [{}, {"lr": 0.1}]})
    assert problems[0].field == "overrides.1.lr"
    assert "batch_size" in problems[0].message
    assert "the spec has no field 'lr'" in problems[0].message


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("batch_size.x", "single value"),
        ("model.hidden_sizes.0", "single value"),
        ("dataset..name", "invalid"),
        (".seed", "invalid"),
        ("optimizer.lr", "has no field 'lr'"),
    ],
)
def test_path_error_names_problem(path: str, fragment: str) -> None:
    message = path_error(path)
    assert message is not None
    assert path in message
    assert fragment in message


@pytest.mark.parametrize(
    "path",
    [
        "batch_size",
        "optimizer",
        "optimizer.momentum",
        "optimizer.betas",
        "schedule.warmup_steps",
        "model.hidden_sizes",
        "dataset.name",
        "analysis.enabled",
    ],
)
def test_path_error_accepts_spec_fields(path: str) -> None:
    assert path_error(path) is None


def test_invalid_child_value_names_index_and_path() -> None:
    problems = problems_of(
        {"grid": {"seed": [1, 2], "optimizer.learning_rate": [0.1, -1.0]}}
    )
    assert [problem.child for problem in problems] == [1, 3]
    problem = problems[0]
    assert problem.field == "children.1.optimizer.learning_rate"
    assert problem.value == -1.0
    assert problem.message.startswith("child 1 (seed=1, optimizer.learning_rate=-1.0)")
    assert "greater than 0" in problem.message


def test_invalid_child_from_combination() -> None:
    # Each value is valid alone; only iris with 512 does not fit.
    problems = problems_of(
        {"grid": {"dataset.name": ["digits", "iris"], "batch_size": [32, 512]}}
    )
    assert len(problems) == 1
    assert problems[0].field == "children.3.batch_size"
    assert "training split" in problems[0].message


def test_field_of_other_optimizer_is_unknown_field() -> None:
    problems = problems_of(
        {"overrides": [{"optimizer": {"name": "adam"}, "optimizer.momentum": 0.9}]}
    )
    assert problems[0].field == "children.0.optimizer.momentum"
    assert "unknown field" in problems[0].message


def test_missing_field_of_new_kind_is_reported() -> None:
    problems = problems_of({"overrides": [{"schedule": {"name": "step"}}]})
    assert problems[0].field == "children.0.schedule.step_size"
    assert "required" in problems[0].message


def test_path_into_non_object_value_is_reported() -> None:
    problems = problems_of(
        {"overrides": [{"optimizer": "adam", "optimizer.learning_rate": 0.1}]}
    )
    assert problems[0].field == "children.0.optimizer.learning_rate"
    assert "not an object" in problems[0].message


def test_child_over_deployment_limit_is_reported() -> None:
    problems = problems_of(
        {
            "base": {"analysis": {"method": "exact"}},
            "grid": {"model.hidden_sizes": [[8], [512]]},
        }
    )
    assert len(problems) == 1
    assert problems[0].child == 1
    assert problems[0].field == "children.1.model.hidden_sizes"
    assert "analysis.enabled" in problems[0].message


def test_non_finite_value_is_rejected() -> None:
    problems = problems_of({"grid": {"optimizer.learning_rate": [float("nan")]}})
    assert problems[0].field == "children.0.optimizer.learning_rate"
    assert "finite" in problems[0].message
