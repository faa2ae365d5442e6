"""Analyses during and after training, critical-point search, continuation."""

from tests.integration.conftest import FAST_SPEC, Stack

ANALYZED = {
    **FAST_SPEC,
    "epochs": 20,
    "analysis": {
        "periodic": {"every_epochs": 5},
        "critical_search": {
            "enabled": True,
            "gradient_tolerance": 1e-7,
            "max_steps": 20,
        },
    },
}


def test_periodic_final_and_search_analyses(stack: Stack) -> None:
    experiment_id = stack.submit(ANALYZED)
    record = stack.wait_finished(experiment_id)
    assert record["status"] == "succeeded", record
    analyses = stack.http.get(f"/v1/experiments/{experiment_id}/analyses").json()
    triggers = [item["trigger"] for item in analyses]
    assert triggers == ["epoch", "epoch", "epoch", "final", "critical_search"]
    assert [item["index"] for item in analyses] == [0, 1, 2, 3, 4]
    assert [item["epoch"] for item in analyses[:3]] == [4, 9, 14]
    search = analyses[-1]["search"]
    assert search is not None
    assert search["gradient_norm"] <= search["initial_gradient_norm"]
    latest = stack.http.get(f"/v1/experiments/{experiment_id}/analysis").json()
    assert latest["trigger"] == "critical_search"
    if search["converged"]:
        assert latest["gradient_norm"] <= 1e-7
        assert latest["verdict"] != "not_critical"


def test_continue_from_final_point(stack: Stack) -> None:
    parent = stack.submit({**FAST_SPEC, "epochs": 5})
    assert stack.wait_finished(parent)["status"] == "succeeded"
    response = stack.http.post(
        f"/v1/experiments/{parent}/continue", json={"point": "final", "epochs": 3}
    )
    assert response.status_code == 202, response.text
    child = response.json()["id"]
    record = stack.wait_finished(child)
    assert record["status"] == "succeeded", record
    assert record["spec"]["initial_parameters"] == {
        "experiment_id": parent,
        "point": "final",
    }
    assert record["spec"]["epochs"] == 3
    # Training on from the parent's end starts at the parent's final loss.
    parent_final = stack.get(parent)["summary"]["train_loss"]
    first_epoch = stack.http.get(
        f"/v1/experiments/{child}/metrics", params={"limit": 1}
    ).json()["records"][0]
    assert first_epoch["loss"] < 2 * parent_final + 0.05


def test_continue_without_saved_point_is_422(stack: Stack) -> None:
    parent = stack.submit({**FAST_SPEC, "epochs": 2, "analysis": {"enabled": False}})
    stack.wait_finished(parent)
    response = stack.http.post(
        f"/v1/experiments/{parent}/continue", json={"point": "escape", "epochs": 3}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"][0]["field"] == "initial_parameters"
    assert "saved no escape parameters" in error["details"][0]["message"]


def test_census_sweep_collects_critical_points(stack: Stack) -> None:
    sweep = {
        "kind": "census",
        "base": {
            **FAST_SPEC,
            "epochs": 10,
            "analysis": {"critical_search": {"max_steps": 5}},
        },
        "grid": {"seed": [0, 1]},
    }
    response = stack.http.post("/v1/sweeps", json=sweep)
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    children = response.json()["children"]
    for child in children:
        stack.wait_finished(child["experiment_id"])
    census = stack.http.get(f"/v1/sweeps/{sweep_id}/census").json()
    assert census["pending"] == 0
    assert len(census["points"]) == 2
    for point in census["points"]:
        assert 0.0 <= point["minimum_ratio"] <= 1.0
        assert point["search_converged"] is not None
    picture = stack.http.get(f"/v1/sweeps/{sweep_id}/census.svg")
    assert picture.status_code == 200
    assert picture.headers["content-type"].startswith("image/svg+xml")
    assert picture.text.count("<circle") >= 2
