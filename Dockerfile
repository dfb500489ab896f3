# syntax=docker/dockerfile:1
# SafeCare SMS: one image holding both binaries.
#   docker build -t safecare/sms .
#   docker run safecare/sms                  -> sms-api serve (the default command)
#   docker run safecare/sms sms-dispatcher   -> a dispatcher replica

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches survive between builds, so a code change recompiles only the
# workspace crates, not every dependency.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/sms-api target/release/sms-dispatcher /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system sms \
    && useradd --system --gid sms --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sms
COPY --from=builder /out/sms-api /out/sms-dispatcher /usr/local/bin/
USER sms
ENV HTTP_ADDR=0.0.0.0:8000 \
    DISPATCHER_METRICS_ADDR=0.0.0.0:9100
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null http://localhost:8000/health || exit 1
CMD ["sms-api", "serve"]
