"""Run the ``saddle`` command as ``python -m saddlepoint.cli``."""

from saddlepoint.cli import main

main()
