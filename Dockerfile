# OnionChat node: the chat and its own tor in one container, as an unprivileged user, every
# byte of state in the /data volume. Building, running and upgrading: docs/docker.md.

FROM debian:bookworm-slim AS base
# Debian's tor, Python and tini, kept current by rebuilding on the newest bookworm-slim, not by
# version pins: a pinned Debian version disappears from the mirror with its next security fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 tini tor \
    && rm -rf /var/lib/apt/lists/*

FROM base AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies from pyproject.toml alone, in their own layer, and the build backend as wheels:
# a change of source then only builds the app's wheel, offline, in a few seconds.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
open("requirements.txt", "w").write("\n".join(p["project"]["dependencies"])); \
open("build-requirements.txt", "w").write("\n".join(p["build-system"]["requires"]))' \
    && python3 -m venv /opt/onionchat \
    && /opt/onionchat/bin/pip install --no-cache-dir -r requirements.txt \
    && /opt/onionchat/bin/pip download --no-cache-dir --dest /wheels -r build-requirements.txt
COPY . .
RUN /opt/onionchat/bin/pip wheel --no-cache-dir --no-deps --no-index --find-links /wheels \
        --wheel-dir /dist .

FROM base
RUN groupadd --gid 10001 onionchat \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin onionchat \
    && install -d -m 0700 -o 10001 -g 10001 /data \
    && ln -s /data/onionchat.toml /onionchat.toml
# The venv with the dependencies (a layer that a change of source leaves as it is), then the app.
COPY --from=build /opt/onionchat /opt/onionchat
COPY --from=build /dist/ /tmp/dist/
RUN /opt/onionchat/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist
# Every command's default data directory (./data) is /data from /; the settings are the
# ONIONCHAT_* variables and /data/onionchat.toml when there is one (./onionchat.toml, linked).
# The node launches its own tor: without it, it would rather fail than serve without an onion.
ENV PATH=/opt/onionchat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ONIONCHAT_SERVER_DATA_DIR=/data \
    ONIONCHAT_TOR_MODE=launch
WORKDIR /
VOLUME ["/data"]
USER 10001:10001
# With tor on, the chat listens on /data/web.sock only, which tor reaches and nothing outside
# the container does: no port to publish. A run without tor over TCP: docs/docker.md.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["onionchat", "health"]
# SIGTERM stops the node cleanly: WebSockets told 1012, up to server.shutdown_grace (10 s) for
# requests under way, the store committed, the onion removed, tor stopped. Give it 20 s
# (`docker run --stop-timeout 20`, compose's stop_grace_period) before the runtime kills it.
STOPSIGNAL SIGTERM
# tini as PID 1: it passes the signal to the node alone (which stops its tor last) and reaps.
ENTRYPOINT ["tini", "--", "onionchat"]
CMD ["serve"]
