# The notify image: one binary for every processor and operator command.
#   make image            (docker, podman or buildah; dev/image.sh)
# Avro schemas and CQL migrations are compiled into the binary; topics/ (topics.toml, read by
# `topics apply` and `schemas register`, and acls.toml) is copied to /app/topics, the working
# directory's default path. dev/image-check.sh (make test) checks this file without an engine.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# librdkafka is built by the rdkafka crate (cmake) against OpenSSL, SASL and curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libssl-dev libsasl2-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY runtime runtime
COPY contract contract
COPY cli cli
COPY sandbox sandbox
COPY providers providers
COPY processors processors
COPY bench bench
COPY tests tests
COPY schemas schemas
RUN cargo build --release --locked --bin notify

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="notify" \
      org.opencontainers.image.description="Kafka-native notification pipeline: every processor and operator command in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/example/notify"
# What the binary links besides glibc (ldd): OpenSSL 3 and zlib; CA roots for TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/notify /usr/local/bin/notify
COPY topics /app/topics
WORKDIR /app
# The chart's podSecurityContext runs as this user too (runAsNonRoot needs a numeric id).
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/notify"]
CMD ["--help"]
