# One image for the API and both kinds of worker. PyPI's Linux torch wheels
# carry CUDA, so the same image trains on a GPU when the container gets one
# and on the CPU otherwise.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY saddlepoint ./saddlepoint
COPY service ./service
COPY worker ./worker
RUN pip install ".[worker]"

RUN useradd --create-home saddle
USER saddle

EXPOSE 8000
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000"]
