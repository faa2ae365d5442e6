"""Analyses of an experiment and saved parameter vectors, in Redis.

Keys, under the ``saddle:`` prefix:

- ``experiment:{id}:analyses``: hash of analysis index to JSON. The worker
  numbers analyses in the order they run, so a restarted run rewrites the same
  fields instead of adding copies.
- ``experiment:{id}:parameters:{name}``: hash with ``meta`` (JSON: dtype and
  size) and ``data``, the raw little-endian bytes of a flat parameter vector
  in base64, so the text client that reads everything else reads it too.
  ``final`` contains the trained parameters, ``escape`` the best escaped point.
"""

import base64
import json
from dataclasses import dataclass
from typing import cast

import redis

from saddlepoint.analysis import CriticalPointAnalysis
from saddlepoint.store.keys import PREFIX

PARAMETER_NAMES = ("final", "escape", "critical")
_DTYPES = {"float32": 4, "float64": 8}


def analyses_key(experiment_id: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}:analyses"


def parameters_key(experiment_id: str, name: str) -> str:
    return f"{PREFIX}experiment:{experiment_id}:parameters:{name}"


@dataclass(frozen=True)
class StoredParameters:
    """A flat parameter vector as bytes, with the dtype needed to read it back."""

    dtype: str
    size: int
    data: bytes


class AnalysisStore:
    """Every analysis of an experiment, and parameter vectors to resume from.

    The client must be created with ``decode_responses=True``.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def save(self, experiment_id: str, analysis: CriticalPointAnalysis) -> None:
        self.client.hset(
            analyses_key(experiment_id), str(analysis.index), analysis.model_dump_json()
        )

    def list(self, experiment_id: str) -> list[CriticalPointAnalysis]:
        fields = cast(dict[str, str], self.client.hgetall(analyses_key(experiment_id)))
        ordered = sorted(fields.items(), key=lambda item: int(item[0]))
        return [
            CriticalPointAnalysis.model_validate_json(payload) for _, payload in ordered
        ]

    def get(self, experiment_id: str, index: int) -> CriticalPointAnalysis | None:
        payload = cast(
            str | None, self.client.hget(analyses_key(experiment_id), str(index))
        )
        if payload is None:
            return None
        return CriticalPointAnalysis.model_validate_json(payload)

    def save_parameters(
        self, experiment_id: str, name: str, parameters: StoredParameters
    ) -> None:
        if name not in PARAMETER_NAMES:
            raise ValueError(f"parameter set {name!r} is not one of {PARAMETER_NAMES}")
        if len(parameters.data) != parameters.size * _DTYPES[parameters.dtype]:
            raise ValueError("parameter bytes do not match their dtype and size")
        meta = json.dumps({"dtype": parameters.dtype, "size": parameters.size})
        data = base64.b64encode(parameters.data).decode("ascii")
        self.client.hset(
            parameters_key(experiment_id, name), mapping={"meta": meta, "data": data}
        )

    def load_parameters(self, experiment_id: str, name: str) -> StoredParameters | None:
        meta, data = cast(
            list[str | None],
            self.client.hmget(parameters_key(experiment_id, name), ["meta", "data"]),
        )
        if meta is None or data is None:
            return None
        fields = json.loads(meta)
        return StoredParameters(
            dtype=fields["dtype"], size=fields["size"], data=base64.b64decode(data)
        )
