"""The Redis layout: the only package that defines key names and encodings.

Keys, all under the ``saddle:`` prefix:

- ``experiments``: sorted set of every experiment id, all with score 0, so
  ``ZREVRANGEBYLEX`` lists them newest first (ids are ULIDs).
- ``experiment:{id}``: hash with the record's fields; nested values are JSON.
  ``status`` changes only through Lua scripts in ``experiments.py``, so a cancel and a
  worker's start or finish never overwrite each other. An experiment that a
  sweep created also has the field ``sweep_id``.
- ``experiment:{id}:metrics``: sorted set of metric record names by ordinal,
  and ``experiment:{id}:metric-data``: hash of name to JSON. A step record is
  named ``s:{step}`` with ordinal ``2 * step``, an epoch record ``e:{epoch}``
  with ordinal ``2 * last_step + 1``, so each sorts after its last update.
  Writing the same record twice replaces it and adds nothing.
- ``experiment:{id}:analysis``: the critical-point analysis as JSON.
- ``sweeps``: sorted set of every sweep id, all with score 0, listed like
  ``experiments``.
- ``sweep:{id}``: the sweep record as JSON, written once with its children.
- ``datasets``, ``dataset:{id}``, ``dataset:{id}:x`` and ``dataset:{id}:y``:
  uploaded datasets, their metadata as JSON and their arrays as raw bytes
  (see ``datasets.py``).
- ``worker:{name}``: a worker's heartbeat, expiring unless renewed.
- ``cancel``: pub/sub channel on which a cancel request publishes the id.
"""

from saddlepoint.store.datasets import (
    DatasetCorrupted,
    DatasetMetadata,
    DatasetStore,
    NewDataset,
)
from saddlepoint.store.experiments import (
    CANCEL_CHANNEL,
    ExperimentStore,
    MetricsPage,
    Transition,
    metric_name_and_ordinal,
    utc_now,
)
from saddlepoint.store.keys import PREFIX
from saddlepoint.store.sweeps import SweepChild, SweepRecord, SweepStore

__all__ = [
    "CANCEL_CHANNEL",
    "PREFIX",
    "DatasetCorrupted",
    "DatasetMetadata",
    "DatasetStore",
    "ExperimentStore",
    "MetricsPage",
    "NewDataset",
    "SweepChild",
    "SweepRecord",
    "SweepStore",
    "Transition",
    "metric_name_and_ordinal",
    "utc_now",
]
