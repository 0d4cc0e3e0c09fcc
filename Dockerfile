# Multi-stage: build the release binary, ship it alone in a slim image.
#   docker build -t digis-realtime .
#   docker run -p 8080:8080 -e REALTIME_KEYS=app.key:secret digis-realtime
FROM rust:1-slim-bookworm AS build
# jemalloc, the default allocator (`--features jemalloc`), is built from C sources with make.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY protocol protocol
COPY gateway gateway
COPY api api
COPY src src
COPY examples examples
COPY load-tests load-tests
RUN cargo build --release --locked --bin realtime

FROM debian:bookworm-slim
# CA roots for rediss:// and Supabase JWKS over https.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home realtime
COPY --from=build /src/target/release/realtime /usr/local/bin/realtime
USER 10001:10001
ENV REALTIME_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["realtime"]
CMD ["serve"]
