"""Request dependencies: the settings, the store and the queue of the app."""

from typing import Annotated, cast

from fastapi import Depends, Request

from saddlepoint.settings import Settings
from saddlepoint.store import ExperimentStore
from service.queue import TaskQueue


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_store(request: Request) -> ExperimentStore:
    return cast(ExperimentStore, request.app.state.store)


def get_queue(request: Request) -> TaskQueue:
    return cast(TaskQueue, request.app.state.queue)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ExperimentStore, Depends(get_store)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
