"""ASGI entry point: ``uvicorn service.main:app``."""

import logging

from service.app import create_app

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)

app = create_app()
