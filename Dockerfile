# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target workloads -t rlops-workloads:0.1.0-cpu .                           # CPU (kind)
#   docker build --target workloads --build-arg RAY_VARIANT=gpu \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                -t rlops-workloads:0.1.0-gpu .                                               # CUDA
#   docker build --target operator -t rlops-operator:0.1.0 .
# Dependency layers come before the source layers, so editing code rebuilds only the last layer.

ARG RAY_VERSION=2.60.0
# cpu, or a CUDA flavour of the official Ray image: gpu, cu128, ...
ARG RAY_VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- requirement lists from pyproject.toml (pinned further by requirements/constraints.txt) ----
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib, pathlib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
pathlib.Path('workloads.txt').write_text('\n'.join(p['dependencies'] + extras['workloads']) + '\n'); \
pathlib.Path('operator.txt').write_text('\n'.join(p['dependencies'] + extras['operator']) + '\n')"

# ---- workloads: Ray 2.60 (official image) + training entrypoint + Serve app ----
FROM rayproject/ray:${RAY_VERSION}-py311-${RAY_VARIANT} AS workloads
# CPU torch wheels by default; a CUDA build passes its PyTorch wheel index here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
WORKDIR /home/ray/rlops
COPY --chown=1000:100 requirements/constraints.txt ./requirements/constraints.txt
COPY --from=requirements --chown=1000:100 /src/workloads.txt ./requirements/workloads.txt
# torch first and exactly (its own index), then the rest under the project's constraints.
# Ray itself is already in the base image at the same pinned version, so pip keeps it.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        "torch==2.13.0" \
    && pip install --no-cache-dir -c requirements/constraints.txt -r requirements/workloads.txt
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 rlops_core ./rlops_core
COPY --chown=1000:100 workloads ./workloads
COPY --chown=1000:100 operator ./operator
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import workloads, rlops_core.storage, rlops_core.checkpoints"
# The image's own user (uid 1000), as KubeRay's pod templates expect.
USER 1000
WORKDIR /home/ray

# ---- operator: slim Python, the core package and the operator extra only (no Ray, no torch) ----
FROM ${PYTHON_IMAGE} AS operator
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/rlops \
    PATH=/opt/rlops/bin:$PATH
RUN groupadd --system --gid 10001 rlops \
    && useradd --system --uid 10001 --gid rlops --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin rlops \
    && python -m venv /opt/rlops
WORKDIR /src
COPY requirements/constraints.txt ./requirements/constraints.txt
COPY --from=requirements /src/operator.txt ./requirements/operator.txt
RUN pip install --no-cache-dir -c requirements/constraints.txt -r requirements/operator.txt
COPY pyproject.toml README.md ./
COPY rlops_core ./rlops_core
COPY operator ./operator
# Fails the build if anything pulled Ray or torch in.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.util as u, rlops_operator; assert not u.find_spec('ray') and not u.find_spec('torch')" \
    && rm -rf /src
WORKDIR /
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "rlops_operator"]
