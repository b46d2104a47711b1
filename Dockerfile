# syntax=docker/dockerfile:1
# switchyard: multi-stage build, small non-root runtime image.
#
#   docker build -t switchyard .
#   docker run --rm -p 1883:1883 -p 8083:8083 -p 8080:8080 -p 9090:9090 switchyard
#
# The hub runs as PID 1 without an init: it handles SIGTERM (drain, then exit 0), SIGINT
# and SIGHUP (reload the configuration) itself and starts no child processes, so there is
# nothing to reap. (`docker run --init` does no harm either.)

# Build: the toolchain the project is developed with, on Debian bookworm like the runtime.
# zmq-sys builds libzmq from source (g++, cmake); aws-lc-sys needs a C compiler and cmake.
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && install -m 0755 target/release/switchyard /usr/local/bin/switchyard

# Run: Debian slim has the C++ runtime libzmq needs; ca-certificates for mqtts://,
# amqps:// and rediss:// brokers with public certificates.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --no-create-home \
        --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
    && install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard
COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
COPY config/container.toml /etc/switchyard/switchyard.toml
# Disk spools (queue.spool) belong here, so queued messages outlive the container.
VOLUME /var/lib/switchyard
WORKDIR /var/lib/switchyard
USER 10001:10001
# MQTT, MQTT over WebSocket, the JSON WebSocket firehose, the admin endpoint.
EXPOSE 1883 8083 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["switchyard", "health", "--timeout", "3s", "-c", "/etc/switchyard/switchyard.toml"]
ENTRYPOINT ["switchyard"]
CMD ["run", "-c", "/etc/switchyard/switchyard.toml"]
