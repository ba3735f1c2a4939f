# The cdcwh services (ingest, transform, sink: one image, the command picks the service).
# A non-editable install has no repository layout, so the contracts and SQL models are copied next to it and
# named by CDCWH_CONTRACTS_DIR / CDCWH_SQL_DIR.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CDCWH_DATA_DIR=/data \
    CDCWH_CONTRACTS_DIR=/app/schemas/contracts \
    CDCWH_SQL_DIR=/app/sql \
    CDCWH_METRICS__HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install . && rm -rf services build

COPY schemas/contracts ./schemas/contracts
COPY sql ./sql

RUN useradd --system --uid 10001 --home-dir /data cdcwh \
    && mkdir -p /data/iceberg/warehouse \
    && chown -R cdcwh /data
USER cdcwh
VOLUME ["/data"]
EXPOSE 9400 9401 9402

ENTRYPOINT ["cdcwh"]
CMD ["run"]
