# syntax=docker/dockerfile:1
#
# One image for every production role (see docker-compose.yml):
#   web      ftstudio web --host 0.0.0.0 --port 8000   (default CMD)
#   worker   ftstudio worker --queues gpu              (GPU host, device reservation)
#   migrate  ftstudio migrate                          (one-shot, before web and worker)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# nodejs/npm only to fetch the pinned browser libraries (npm ci + make vendor);
# make is not part of the slim image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/ftstudio

# Dependencies first, so code edits do not re-download torch.
COPY pyproject.toml package.json package-lock.json Makefile alembic.ini ./
# pyproject.toml names README.md as the readme; setuptools refuses to build without it.
COPY README.md ./

# torch on its own layer (the biggest download). On Linux x86_64, PyPI's torch wheel is the
# CUDA build (CUDA runtime libraries come as nvidia-* wheels), so the same image runs training
# on a GPU host; the worker container only needs the host's NVIDIA driver via the device
# reservation in docker-compose.yml.
RUN pip install torch==2.13.0

COPY app/ app/
COPY worker/ worker/
COPY templates/ templates/
COPY static/ static/
COPY migrations/ migrations/

# Editable: templates, static files and migrations are read from this directory. The gpu extra
# brings Liger's fused kernels, which GPU workers use by default (liger_kernels=auto).
RUN pip install -e '.[gpu]'

# Third-party JS (htmx, uPlot) from the lockfile, copied into static/vendor.
RUN npm ci --no-audit --no-fund \
    && make vendor \
    && rm -rf node_modules /root/.npm

RUN useradd --create-home --uid 1000 --user-group studio \
    && mkdir -p /data \
    && chown -R studio:studio /data

ENV FTSTUDIO_DATA_DIR=/data
VOLUME /data

USER studio
EXPOSE 8000

CMD ["ftstudio", "web", "--host", "0.0.0.0", "--port", "8000"]
