# The image of docker-compose.yml's worker and emitter: sigbroker with the
# hiredis parser, and the examples/ package they run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package before the examples: editing an example does not reinstall it.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[hiredis]"

COPY examples ./examples

RUN useradd --create-home --uid 10001 sigbroker
USER sigbroker

# The worker imports -A modules from the working directory, /app.
CMD ["sigbroker", "worker", "-A", "examples.receivers"]
