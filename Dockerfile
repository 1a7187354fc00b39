# Builds affinity-server and affinity-trainer (protoc is vendored; no system packages needed).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin affinity-server --bin affinity-trainer --bin affinity-client

FROM debian:bookworm-slim
COPY --from=build /src/target/release/affinity-server /src/target/release/affinity-trainer /src/target/release/affinity-client /usr/local/bin/
USER 65534
WORKDIR /tmp
ENTRYPOINT ["affinity-server"]
