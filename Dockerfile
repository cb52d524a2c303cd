# syntax=docker/dockerfile:1
# spendgate's container image: the wheel `pip wheel` builds from pyproject.toml, installed
# in a slim Python 3.11 image, run as a non-root user. See docs/deploy.md.
#
#   docker build -t spendgate .
#   docker run -p 8700:8700 -v ./spendgate.yaml:/etc/spendgate/spendgate.yaml:ro \
#     -v spendgate-data:/var/lib/spendgate -e OPENAI_API_KEY -e SPENDGATE_ADMIN_TOKEN spendgate
#
# The config's storage.url must point into the data volume:
#   storage: {url: "sqlite:////var/lib/spendgate/spendgate.db"}

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the spendgate wheel and the wheels of its dependencies
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: only the installed wheels, no compiler, no source tree
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPENDGATE_CONFIG=/etc/spendgate/spendgate.yaml
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels spendgate \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/spendgate \
      --shell /usr/sbin/nologin spendgate \
 && mkdir -p /etc/spendgate /var/lib/spendgate \
 && chown spendgate:spendgate /var/lib/spendgate
USER spendgate:spendgate
WORKDIR /var/lib/spendgate
VOLUME ["/var/lib/spendgate"]
EXPOSE 8700
# /readyz answers 200 only while storage can take writes (docs/admin-api.md).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/readyz', timeout=2)"]
# SIGTERM drains requests in flight (server.drain_timeout_s); SIGHUP reloads the config.
STOPSIGNAL SIGTERM
ENTRYPOINT ["spendgate"]
CMD ["serve", "--config", "/etc/spendgate/spendgate.yaml", "--host", "0.0.0.0", "--port", "8700"]
