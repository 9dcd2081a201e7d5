# One image for the bot and the GPU workers. PyPI's Linux torch wheels bundle CUDA, so workers need only the NVIDIA
# container runtime on the host (docker-compose.yml reserves a GPU for them); the bot never imports torch.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TQDM_DISABLE=1

# libgomp1: torch's CPU kernels; libglib2.0-0 and libgl1: opencv, pulled in by the ncnn upscaler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# A CUDA build of torch within the range pyproject.toml accepts; override for CPU-only images, e.g.
#   docker build --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
ARG TORCH_SPEC="torch>=2.4,<2.15"
ARG TORCH_INDEX=""
RUN pip install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY bot ./bot
COPY worker ./worker
COPY training ./training
COPY config ./config
COPY models ./models
# Editable install: the code finds config/ and models/ beside it in /app.
RUN pip install -e . \
    && useradd --create-home --uid 1000 imagine \
    && mkdir -p /app/.imagine /app/outputs \
    && chown -R imagine /app/.imagine /app/outputs
USER imagine

# Metrics (see README, operators' section).
EXPOSE 9100 9101
CMD ["imagine-worker"]
