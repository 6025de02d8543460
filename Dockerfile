# Multi-stage build: compile in the Rust image, run in a slim Debian.
# scripts/image-check replays the build stage (its COPY and RUN lines) outside
# Docker, with exactly the files copied here, so its inputs cannot drift.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, on stub sources: this layer is rebuilt only when a
# manifest or Cargo.lock changes. The bench's manifest is there because the
# workspace lists it; its source is a stub that nothing builds.
COPY Cargo.toml Cargo.lock ./
COPY benches/camsig-bench/Cargo.toml benches/camsig-bench/
RUN mkdir -p src benches/camsig-bench/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cp src/main.rs benches/camsig-bench/src/main.rs \
    && cargo build --release --locked -p camsig \
    && cargo clean --release --locked -p camsig

# The real sources. The stub's artifacts are gone (cargo clean above), so the
# binary is rebuilt whatever the copied files' timestamps say.
COPY src ./src
RUN cargo build --release --locked -p camsig --bin camsig

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK; the binary itself needs nothing but libc.
# The user's home holds dev mode's secret when no auth.jwt_secret is set.
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --create-home --uid 10001 camsig
COPY --from=build /src/target/release/camsig /usr/local/bin/camsig
USER camsig
ENV CAMSIG__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s CMD curl -fs http://127.0.0.1:8080/healthz || exit 1
# Exec form, no shell: SIGTERM reaches camsig, which drains before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["camsig"]
