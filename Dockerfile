# syntax=docker/dockerfile:1
# Driftline's container image. Two stages: the first installs Driftline and its dependencies
# into a virtualenv, the second copies only that virtualenv onto a clean slim Python, so no
# compiler, pip cache or source tree reaches the image that runs.
#
#   docker build -t driftline:0.1.0 .
#   docker run --rm -p 9108:9108 -v $PWD/my-config.toml:/etc/driftline/config.toml:ro driftline:0.1.0
#
# The config is mounted, not baked in (it names brokers; set [http] host = "0.0.0.0" and
# [state] dir = "/var/lib/driftline" in it). The Helm chart mounts its ConfigMap there.
#
# Kept consistent with helm/driftline (tests/monitor/test_dockerfile.py checks it): user id
# 10001, entrypoint `driftline`, config at /etc/driftline/config.toml, state in
# /var/lib/driftline, HTTP on port 9108.

# Both stages must use the same Python: the virtualenv links to the base image's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Every dependency ships manylinux wheels for this Python, so the build needs no compiler;
# --only-binary makes a missing wheel fail the build instead of compiling from source.
RUN python -m venv /opt/driftline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY detectors ./detectors
COPY monitor ./monitor
RUN /opt/driftline/bin/pip install --only-binary=:all: --no-binary=driftline . \
 && /opt/driftline/bin/pip uninstall -y pip \
 && /opt/driftline/bin/driftline --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="Streaming drift, performance and fairness monitor for ML models, reading Kafka" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/driftline --shell /usr/sbin/nologin driftline \
 && mkdir -p /etc/driftline /var/lib/driftline \
 && chown 10001:10001 /var/lib/driftline
COPY --from=build /opt/driftline /opt/driftline
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /var/lib/driftline
EXPOSE 9108
# SIGTERM: Driftline finishes the batch in hand, checkpoints, commits and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["driftline"]
CMD ["run", "--config", "/etc/driftline/config.toml"]
