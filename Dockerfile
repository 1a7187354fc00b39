# Builds affinity-server, affinity-trainer and affinity-client (protoc is vendored; no
# system packages needed). The Rust here must be at least every locked dependency's
# rust-version: service/tests/container.rs checks it, and that the binaries below are
# the ones the workspace builds.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin affinity-server --bin affinity-trainer --bin affinity-client

FROM debian:bookworm-slim
COPY --from=build /src/target/release/affinity-server /src/target/release/affinity-trainer /src/target/release/affinity-client /usr/local/bin/
COPY examples/server.toml /etc/affinity/server.example.toml
# nobody:nogroup; the helm chart runs it with a read-only root filesystem.
USER 65534:65534
WORKDIR /tmp
# gRPC, and Prometheus metrics with /livez and /readyz (when --metrics-listen is set).
EXPOSE 50051 9090
ENTRYPOINT ["affinity-server"]
