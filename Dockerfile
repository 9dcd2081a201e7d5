# Two images from one file:
#   docker build --target bot -t imagine-bot .      the Discord bot (and the optional web companion): no torch,
#                                                   diffusers or transformers, which the bot never imports
#   docker build --target worker -t imagine-worker .  GPU workers (the default target, the last stage)
# PyPI's Linux torch wheels bundle CUDA, so workers need only the NVIDIA container runtime on the host
# (docker-compose.yml reserves a GPU for them; deploy/kubernetes requests nvidia.com/gpu).

FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TQDM_DISABLE=1
# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a numeric USER, and mounted volumes get its ownership.
RUN useradd --create-home --uid 1000 imagine
WORKDIR /app

# The front ends' sources: bot/, cli/, shared/, config/ and, once it exists, web/ (the companion runs from the bot image). A
# throwaway stage, so the whole build context never becomes a layer of either image.
FROM base AS bot-sources
COPY . /src
RUN mkdir /out \
    && cp -r /src/pyproject.toml /src/README.md /src/bot /src/cli /src/shared /src/config /out/ \
    && if [ -d /src/web ]; then cp -r /src/web /out/; fi

FROM base AS bot
COPY --from=bot-sources /out /app
# Editable install: the code finds config/ beside it in /app. The base dependencies only (pyproject.toml).
RUN pip install -e . \
    && mkdir -p /app/.imagine /app/outputs \
    && chown -R imagine /app/.imagine /app/outputs
USER 1000
# Prometheus metrics (METRICS_PORT); the web companion listens on 8080.
EXPOSE 9100 8080
CMD ["imagine-bot"]

FROM base AS worker
# libgomp1: torch's CPU kernels; libglib2.0-0 and libgl1: opencv, pulled in by the ncnn upscaler. Not pinned (DL3008):
# they follow the Debian release of the python:3.11-slim base and its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

# A CUDA build of torch within the range pyproject.toml's `worker` extra accepts, in its own layer (it is most of the
# image and changes least). Override for CPU-only images, e.g.
#   docker build --target worker --build-arg TORCH_SPEC="torch==2.13.0" \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
# DL3013 (pin pip versions): TORCH_SPEC is pyproject.toml's range on purpose; pin it with --build-arg.
ARG TORCH_SPEC="torch>=2.4,<2.15"
ARG TORCH_INDEX=""
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY worker ./worker
COPY training ./training
COPY config ./config
COPY models ./models
# Editable install with the `worker` extra (diffusers, transformers, the upscaler, ...); torch is already satisfied.
RUN pip install -e ".[worker]" \
    && mkdir -p /app/.imagine /app/outputs \
    && chown -R imagine /app/.imagine /app/outputs
USER 1000
# Prometheus metrics (METRICS_PORT; with --gpus all, METRICS_PORT + n for the n-th GPU).
EXPOSE 9100 9101
CMD ["imagine-worker"]
