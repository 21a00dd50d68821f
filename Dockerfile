# syntax=docker/dockerfile:1
# Two images from one file, tagged with the repository's version (scripts/version prints it):
#   docker build --target server -t sentiment-service:"$(scripts/version)" .          the server, no PyTorch
#   docker build --target export -t sentiment-service-export:"$(scripts/version)" .   trains and exports
# docker-compose.yml builds both. BASE_IMAGE must provide python3 (3.11+) with venv; the default is
# the official slim Python image; scripts/build-image passes a debootstrapped Debian instead.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --gid 10001 sentiment \
    && useradd --uid 10001 --gid sentiment --home-dir /nonexistent --no-create-home --no-log-init \
       --shell /usr/sbin/nologin sentiment

# The server's dependencies only: grpcio, onnxruntime, tokenizers, numpy, prometheus-client,
# pydantic-settings and the client package (tests/deploy checks this set holds no torch).
FROM base AS server-build
# onnxruntime-gpu for the CUDA execution provider (deploy/compose.gpu.yml sets it)
ARG ONNXRUNTIME=onnxruntime
COPY pyproject.toml README.md /src/
COPY clients/python /src/clients/python
COPY service /src/service
COPY model_export /src/model_export
COPY model_contract.py /src/model_contract.py
RUN python3 -m venv /opt/venv \
    && pip install /src/clients/python /src \
    && if [ "$ONNXRUNTIME" != onnxruntime ]; then pip uninstall -y onnxruntime && pip install "$ONNXRUNTIME"; fi

FROM server-build AS export-build
# the CPU build of PyTorch (PyPI's default build for Linux carries CUDA, several GB)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install "/src[train]"

# Trains, exports and verifies the model into /models/sentiment/<version>; with --if-missing (as
# docker-compose.yml runs it) a volume that already holds a version is left as it is.
FROM base AS export
COPY --from=export-build /opt/venv /opt/venv
RUN mkdir -p /models /cache && chown sentiment:sentiment /models /cache
ENV SENTIMENT_CACHE_DIR=/cache
WORKDIR /app
USER sentiment
VOLUME ["/models", "/cache"]
ENTRYPOINT ["python", "-m", "model_export"]
CMD ["build", "--out", "/models/sentiment", "--if-missing"]

FROM base AS server
COPY --from=server-build /opt/venv /opt/venv
RUN mkdir -p /models && chown sentiment:sentiment /models
ENV SENTIMENT_MODEL_DIR=/models/sentiment \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=50051 \
    SENTIMENT_METRICS_HOST=0.0.0.0 \
    SENTIMENT_METRICS_PORT=9100 \
    SENTIMENT_HTTP_PORT=8080 \
    SENTIMENT_GRACE_PERIOD_S=20
USER sentiment
VOLUME ["/models"]
EXPOSE 50051 8080 9100
# SIGTERM drains: health turns NOT_SERVING, new calls get UNAVAILABLE, accepted ones are answered,
# then exit 0 within SENTIMENT_GRACE_PERIOD_S. Give the container longer than that before SIGKILL
# (docker stop -t 25, compose stop_grace_period: 25s, Kubernetes terminationGracePeriodSeconds: 30).
STOPSIGNAL SIGTERM
# asks grpc.health.v1 on 127.0.0.1:$SENTIMENT_PORT: SERVING only once the model is loaded and warm
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "service.ops.probe", "--quiet"]
ENTRYPOINT ["python", "-m", "service"]
