# syntax=docker/dockerfile:1
# Multi-stage: build wheels (project + dependencies) in a full image, install them
# non-editable into a slim runtime image that runs as an unprivileged user.
# Every folder mapped in pyproject.toml's [tool.setuptools.package-dir] must be COPYed below:
# tests/test_deploy.py builds the wheel from exactly these COPY lines and runs every command from it.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md LICENSE ./
COPY engine engine
COPY api api
COPY persister persister
COPY record record
COPY lua lua
COPY predmarket predmarket
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 predmarket
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels predmarket && rm -rf /wheels
USER predmarket
WORKDIR /home/predmarket
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
ENTRYPOINT ["predmarket"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
