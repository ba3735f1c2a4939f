# The cdcwh services (ingest, transform, sink: one image, the command picks the service, e.g.
# `docker run cdcwh:0.1.0 ingest`; without a command it prints the command list).
#
# Three stages so that a source change rebuilds only the last layers: `deps` installs the locked
# dependencies (requirements.lock, compiled with hashes by `make lock`) into a virtualenv, `build` turns
# services/ into a wheel, and the runtime stage copies the virtualenv and installs that wheel without
# dependencies. The image has the base dependencies only: no embedded broker or Postgres (they are for a
# laptop), so every service needs CDCWH_KAFKA__BOOTSTRAP_SERVERS and CDCWH_POSTGRES__DSN (docker-compose.yml).
# A non-editable install has no repository layout, so the contracts and SQL models are copied next to it and
# named by CDCWH_CONTRACTS_DIR / CDCWH_SQL_DIR.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/cdcwh
COPY requirements.lock /tmp/requirements.lock
RUN /opt/cdcwh/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/cdcwh/bin:$PATH \
    CDCWH_DATA_DIR=/data \
    CDCWH_CONTRACTS_DIR=/app/schemas/contracts \
    CDCWH_SQL_DIR=/app/sql \
    CDCWH_METRICS__HOST=0.0.0.0

# A numeric user (and group) so that Kubernetes' runAsNonRoot can verify it; the named account gives it a home.
RUN groupadd --system --gid 10001 cdcwh \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home cdcwh \
    && mkdir -p /data/iceberg/warehouse \
    && chown -R 10001:10001 /data

COPY --from=deps /opt/cdcwh /opt/cdcwh
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

WORKDIR /app
COPY schemas/contracts ./schemas/contracts
COPY schemas/semantic ./schemas/semantic
COPY sql ./sql

USER 10001:10001
VOLUME ["/data"]
EXPOSE 9400 9401 9402 9405 8400

ENTRYPOINT ["cdcwh"]
CMD ["--help"]
