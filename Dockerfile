# syntax=docker/dockerfile:1
# The four services and the ops tool in one small image. Multi-stage: dependencies are compiled in their own
# layer (cargo-chef), so a source change rebuilds only the workspace crates.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# librdkafka (bundled by the rdkafka crate) builds with make/gcc; aws-lc needs cmake and perl,
# and the vendored OpenSSL (TLS/SASL for Kafka) perl and make.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
 && install -m 0755 target/release/generator target/release/enricher target/release/detector \
      target/release/counter target/release/ops /usr/local/bin/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pipeline
COPY --from=builder /usr/local/bin/generator /usr/local/bin/enricher /usr/local/bin/detector \
     /usr/local/bin/counter /usr/local/bin/ops /usr/local/bin/
USER pipeline
# Each compose service names its binary; running the image bare shows the generator's help.
CMD ["generator", "--help"]
