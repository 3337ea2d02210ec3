# ImPartial dashboard for a lab server. docs/server.md explains building, running and access control.
#   CPU or GPU (PyPI's torch wheel brings its own CUDA libraries; run with --gpus all):
#     docker build -t impartial .
#   smaller CPU-only image:
#     docker build -t impartial --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   on a CUDA base image (Python is installed from the distribution when the base lacks it):
#     docker build -t impartial --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Index serving torch (e.g. PyTorch's CPU-only wheels); empty = the torch build PyPI gives.
ARG TORCH_INDEX_URL=""
# Extra pip requirements, e.g. "Authlib>=1.3.2" for Streamlit's OIDC login.
ARG EXTRA_PACKAGES=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# CUDA runtime images ship without Python. Versions are not pinned because they differ per base
# image; the distribution's security updates are what we want here.
# hadolint ignore=DL3008
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A virtual environment keeps pip away from the system Python (PEP 668 on Ubuntu 24.04 bases).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt ./
# torch's pin is read from requirements.txt; EXTRA_PACKAGES are pinned (or not) by whoever builds.
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' requirements.txt)"; \
    fi \
    && pip install --no-cache-dir -r requirements.txt \
    && if [ -n "$EXTRA_PACKAGES" ]; then pip install --no-cache-dir $EXTRA_PACKAGES; fi

# The code stays owned by root (read-only to the app); only /data is writable by the app's user.
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && if ! getent passwd 1000 >/dev/null; then useradd --uid 1000 --create-home --shell /usr/sbin/nologin impartial; fi \
    && mkdir -p /data \
    && chown 1000:1000 /data

# Dask settings for the workers this image starts (docs/server.md): prediction at full speed.
COPY docker/dask.yaml /etc/dask/impartial.yaml

ENV IMPARTIAL_DATA=/data
VOLUME /data
USER 1000
EXPOSE 8501

# Python's urllib, because slim images have no curl; any error or a body other than "ok" fails the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).read() != b'ok')"]

# Headless mode, the upload limit and no usage statistics come from .streamlit/config.toml.
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
