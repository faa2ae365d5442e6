"""Print the OpenAPI document: ``python -m service.openapi > openapi/openapi.json``."""

import json

from saddlepoint.settings import Settings
from service.app import create_app


def render_openapi() -> str:
    app = create_app(Settings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render_openapi(), end="")
