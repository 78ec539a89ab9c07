# syntax=docker/dockerfile:1
# Build: docker build -t outboxd .
# Run:   docker run --rm -e OUTBOXD_DATABASE_URL=postgresql://... -p 8025:8025 outboxd

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY outbox ./outbox
COPY daemon ./daemon
COPY sql ./sql
COPY templates ./templates
RUN python -m venv /opt/outboxd \
 && /opt/outboxd/bin/pip install --no-compile '.[daemon]' \
 && /opt/outboxd/bin/python -m compileall -q /opt/outboxd/lib

FROM python:3.11-slim
ENV PATH=/opt/outboxd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OUTBOXD_HTTP__HOST=0.0.0.0 \
    OUTBOXD_DATA_DIR=/var/lib/outboxd \
    OUTBOXD_LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /var/lib/outboxd --create-home outboxd
COPY --from=build /opt/outboxd /opt/outboxd
USER 10001:10001
WORKDIR /var/lib/outboxd
EXPOSE 8025
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8025/healthz', timeout=2).status == 200 else 1)"]
# Exec form: the daemon is PID 1's only child-free process and receives SIGTERM itself.
ENTRYPOINT ["outboxd"]
CMD ["run"]
