"""Task name and queues shared by the API, which sends, and the workers."""

from saddlepoint.spec import Device

RUN_EXPERIMENT_TASK = "saddlepoint.run_experiment"

# A CPU worker consumes "any" and "cpu", a GPU worker "any" and "cuda", so a
# spec with device "auto" runs on whichever worker is free first.
QUEUE_BY_DEVICE: dict[Device, str] = {
    Device.AUTO: "any",
    Device.CPU: "cpu",
    Device.CUDA: "cuda",
}
