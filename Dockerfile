# syntax=docker/dockerfile:1.7
# question-app: production image. Dependencies come from uv.lock (the production set only: no dev group and
# no `local` extra, so no embedded model and no compiler); the final stage is python:3.12-slim plus the venv.
#   docker build -t <registry>/question-app:0.1.0 .
# There is no Docker engine on the project's machines; tests/test_dockerfile.py lints this file and runs its
# install step in a clean venv.

FROM python:3.12-slim AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (a layer that changes only with the lock file), then the project itself.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project --no-editable
COPY README.md ./
COPY app ./app
COPY graphs ./graphs
COPY telemetry ./telemetry
COPY evals ./evals
COPY quiz ./quiz
COPY question_app ./question_app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

FROM python:3.12-slim
# The venv stays owned by root: the app user can read it, not change it.
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000
# Numeric user and group: `runAsNonRoot` can verify a number, not a name.
USER 10001:10001
EXPOSE 8000
# One process per container; scale with replicas (see docs/how-to/scale-out.md "Scaling").
ENTRYPOINT ["question-app"]
