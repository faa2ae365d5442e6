"""Contract shared by the API and the workers: the experiment spec, the records
the service returns, and the Redis layout. Imports neither FastAPI, Celery nor
torch, so both sides and the command-line client can use it."""

__version__ = "0.1.0"
