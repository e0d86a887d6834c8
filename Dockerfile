# One image for every formy-async process. It runs the web process by default; the same image runs
# the worker (`formy-async worker`) and the ComfyUI simulator (`formy-async simulator --host
# 0.0.0.0 --port 8188`). docker-compose.yml wires them together; docs/deploy.md covers platforms.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app

# The package and its dependencies (pyproject.toml names README.md as the long description).
COPY pyproject.toml README.md ./
COPY formy_async ./formy_async
RUN pip install --no-cache-dir --disable-pip-version-check ".[server]"

# The entry points and the workflow catalogue are read from the working directory.
COPY server.py worker_settings.py ./
COPY workflows ./workflows

# A non-root user, owning the local storage directory (FORMY_STORAGE_DIR defaults to ./data): a
# named volume mounted there starts with this ownership.
RUN groupadd --gid 10001 formy \
    && useradd --uid 10001 --gid formy --no-create-home --shell /usr/sbin/nologin formy \
    && mkdir -p /app/data \
    && chown formy:formy /app/data
USER 10001:10001

EXPOSE 8080

# The web process answers /healthz while it runs. Python, not curl: the slim image has no curl.
# FORMY_PORT wins over PORT, as in the settings. The worker overrides this with `arq --check`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('FORMY_PORT') or os.environ.get('PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

CMD ["python", "server.py"]
