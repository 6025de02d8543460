# Multi-stage build: compile in the Rust image, run in a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY openapi ./openapi
RUN cargo build --release --locked --bin camsig

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 camsig
COPY --from=build /src/target/release/camsig /usr/local/bin/camsig
USER camsig
ENV CAMSIG__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fs http://127.0.0.1:8080/healthz || exit 1
# Exec form, no shell: SIGTERM reaches camsig, which drains before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["camsig"]
