# The S8 paper-trading service (and every sprint script) in a container; see S9/README.md.
#   docker compose up            # service + Prometheus + Grafana (http://localhost:3000)
#   docker build -t binance-research-toolkit .
# The install steps are the README's (`make setup`): binary wheels only, then the project itself.

# ---------------------------------------------------------------- build: the virtual environment
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
RUN python -m pip install --quiet --upgrade pip \
 && python -m pip install --quiet --only-binary=:all: -r requirements.txt

# ---------------------------------------------------------------- run: slim, non-root
FROM python:3.11-slim AS run
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONTROL_API_HOST=0.0.0.0 \
    CONTROL_API_PORT=8008
RUN groupadd --system --gid 10001 toolkit \
 && useradd --system --uid 10001 --gid toolkit --home-dir /app --shell /usr/sbin/nologin toolkit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=toolkit:toolkit . .
RUN python -m pip install --quiet --no-deps -e . \
 && mkdir -p data reports && chown toolkit:toolkit data reports
USER toolkit
VOLUME ["/app/data", "/app/reports"]
EXPOSE 8008
# GET /status on the control API with CONTROL_API_TOKEN (exit 0 healthy, 1 not)
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-m", "S9.healthcheck"]
CMD ["python", "S8/service.py", "--config", "S8/service.yaml"]
