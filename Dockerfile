# The image of docker-compose.yml's services: sigbroker with the hiredis parser
# and Django (for examples/django), and the examples/ they run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package before the examples: editing an example does not reinstall it.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[hiredis,django]"

COPY examples ./examples

RUN useradd --create-home --uid 10001 sigbroker
USER sigbroker

# The worker imports -A modules from the working directory, /app.
CMD ["sigbroker", "worker", "-A", "examples.receivers"]
