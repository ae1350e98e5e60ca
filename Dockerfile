# The inference service image: `mlkit serve` on one gated model, as a non-root user.
#
# Build it from the repository root, after `mlkit evaluate` wrote a passing gate.json:
#   docker build \
#     --build-arg MODEL_DIR=build/train/model \
#     --build-arg MODEL_SHA256="$(jq -r .model_sha256 build/evaluate/gate.json)" \
#     -t REGISTRY/mlkit-serve:GITSHA-MODELSHA12 .
# MODEL_DIR must be a path .dockerignore admits: build/train/model (make report)
# or release/train/model (the deploy workflow).
# The build fails unless the weights in MODEL_DIR have exactly MODEL_SHA256, and the
# server refuses any other weights at start (MLKIT_SERVE_EXPECTED_MODEL_SHA256), so
# an image tag names one model for good.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with mlkit and the CPU build of torch ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The same torch release as `make setup`, from PyTorch's CPU-only index.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlkit ./mlkit
# Limitation: this installs all of mlkit's runtime dependencies (papermill, modal,
# matplotlib...), which serving does not use; a `serve` extra would slim the image.
RUN pip install . && rm -rf /src

# ---- runtime: the environment, the model, nothing to build with ----
FROM ${PYTHON_IMAGE} AS runtime
ARG MODEL_DIR=build/train/model
ARG MODEL_SHA256
LABEL org.opencontainers.image.title="mlkit-serve" \
      org.opencontainers.image.description="mlkit inference service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mlkit.model.sha256="${MODEL_SHA256}"

RUN groupadd --system --gid 10001 mlkit \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin mlkit
COPY --from=build /opt/venv /opt/venv
# Owned by root and read-only to the server's user.
COPY ${MODEL_DIR} /models/model
# Copied by digest: the build stops if the weights are not the gated ones.
RUN test -n "${MODEL_SHA256}" \
    || { echo "set --build-arg MODEL_SHA256 to the gated model's sha256" >&2; exit 1; } \
    && echo "${MODEL_SHA256}  /models/model/model.safetensors" | sha256sum -c - \
    && chmod -R a+rX,go-w /models

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    MLKIT_SERVE_HOST=0.0.0.0 \
    MLKIT_SERVE_PORT=8080 \
    MLKIT_SERVE_MODEL_DIR=/models/model \
    MLKIT_SERVE_EXPECTED_MODEL_SHA256=${MODEL_SHA256}

USER 10001:10001
EXPOSE 8080
# Liveness only; Kubernetes probes /readyz itself for readiness.
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mlkit", "serve"]
