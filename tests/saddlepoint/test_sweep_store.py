"""SweepStore against a real redis-server."""

import time

import pytest

from saddlepoint.records import ExperimentStatus
from saddlepoint.spec import ExperimentSpec, Limits
from saddlepoint.spec.sweep import SweepSpec, plan_sweep
from saddlepoint.store import ExperimentStore, SweepRecord, SweepStore

LIMITS = Limits(max_exact_parameters=5000, max_total_steps=1_000_000)


@pytest.fixture
def sweeps(store: ExperimentStore) -> SweepStore:
    return SweepStore(store)


def create_sweep(
    sweeps: SweepStore, name: str = "lr", values: tuple[float, ...] = (0.1, 0.01)
) -> SweepRecord:
    spec = SweepSpec.model_validate(
        {
            "name": name,
            "base": {"dataset": {"name": "iris"}, "epochs": 2},
            "grid": {"optimizer.learning_rate": list(values)},
        }
    )
    record, _ = sweeps.create(spec, plan_sweep(spec, 256, LIMITS))
    return record


def test_create_then_get_round_trips(sweeps: SweepStore) -> None:
    created = create_sweep(sweeps)
    loaded = sweeps.get(created.id)
    assert loaded is not None
    assert loaded == created
    assert loaded.name == "lr"
    assert loaded.paths == ["optimizer.learning_rate"]
    assert loaded.grid == {"optimizer.learning_rate": [0.1, 0.01]}
    assert loaded.overrides is None
    assert loaded.base.epochs == 2
    assert [child.index for child in loaded.children] == [0, 1]
    assert [child.values for child in loaded.children] == [
        {"optimizer.learning_rate": 0.1},
        {"optimizer.learning_rate": 0.01},
    ]


def test_children_are_queued_experiments_with_sweep_id(
    sweeps: SweepStore, store: ExperimentStore
) -> None:
    sweep = create_sweep(sweeps)
    children = sweeps.children(sweep)
    assert [record.id for record in children if record] == sweep.experiment_ids
    for record, rate in zip(children, [0.1, 0.01], strict=True):
        assert record is not None
        assert record.status == ExperimentStatus.QUEUED
        assert record.sweep_id == sweep.id
        assert record.spec.optimizer.learning_rate == rate
        assert record.spec.dataset.name == "iris"
    assert set(store.list_ids(limit=10)) == set(sweep.experiment_ids)


def test_plain_experiment_has_no_sweep_id(store: ExperimentStore) -> None:
    created = store.create(ExperimentSpec(epochs=1))
    loaded = store.get(created.id)
    assert loaded is not None
    assert loaded.sweep_id is None


def test_child_statuses_follow_experiments(
    sweeps: SweepStore, store: ExperimentStore
) -> None:
    sweep = create_sweep(sweeps)
    first, second = sweep.experiment_ids
    store.request_cancel(second)
    assert sweeps.child_statuses([first, second]) == [
        ExperimentStatus.QUEUED,
        ExperimentStatus.CANCELLED,
    ]
    assert sweeps.child_statuses(["01ARZ3NDEKTSV4RRFFQ69G5FAV"]) == [None]


def test_get_unknown_is_none(sweeps: SweepStore) -> None:
    assert sweeps.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_list_newest_first_with_cursor(sweeps: SweepStore) -> None:
    ids = []
    for index in range(3):
        ids.append(create_sweep(sweeps, name=f"s{index}").id)
        time.sleep(0.002)  # ULIDs order by millisecond
    assert sweeps.list_ids(limit=10) == ids[::-1]
    assert sweeps.list_ids(limit=10, before=ids[2]) == ids[1::-1]
    names = [sweep.name for sweep in sweeps.get_many(sweeps.list_ids(limit=2))]
    assert names == ["s2", "s1"]
    assert sweeps.get_many([]) == []
