# syntax=docker/dockerfile:1
# vidproxy: build a venv in one stage, copy it into a clean runtime stage.
#   docker build -t vidproxy .
#   docker run --rm -p 8080:8080 -v vidproxy-data:/data vidproxy
# Both stages must use the same Python: the venv links to its interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/vidproxy
WORKDIR /src
# Only what `pip install .` needs; tests and CI files stay out of the image.
COPY pyproject.toml README.md ./
COPY vidproxy ./vidproxy
RUN /opt/vidproxy/bin/pip install .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 vidproxy \
 && useradd --system --uid 10001 --gid vidproxy --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin vidproxy \
 && mkdir -p /data /cache /etc/vidproxy \
 && chown vidproxy:vidproxy /data /cache
COPY --from=build /opt/vidproxy /opt/vidproxy
ENV PATH=/opt/vidproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIDPROXY_SERVER_HOST=0.0.0.0 \
    VIDPROXY_FS_DIR=/data \
    VIDPROXY_CACHE_DIR=/cache
# `vidproxy serve` reads ./config.toml when present: mount one here to use it.
WORKDIR /etc/vidproxy
USER 10001:10001
VOLUME ["/data", "/cache"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VIDPROXY_SERVER_PORT', '8080'), timeout=4)"]
# vidproxy drains on SIGTERM: it stops accepting, lets requests in flight finish
# for server.shutdown_timeout (30 s by default), then exits 0. Docker's own stop
# timeout is 10 s: run `docker stop --time 40` (compose: stop_grace_period).
STOPSIGNAL SIGTERM
# Exec form: vidproxy is PID 1 and gets the signal itself, not through a shell.
ENTRYPOINT ["vidproxy"]
CMD ["serve"]
