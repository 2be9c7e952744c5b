# syntax=docker/dockerfile:1
# A static Holdfast in an image with nothing else: build with musl, run from scratch as a
# non-root user. Build: docker build -t holdfast .
# Run:   docker run -p 7999:7999 holdfast
# The publish API listens on the container's loopback by default; to reach it from outside,
# give it publish authentication and an address, e.g.
#   docker run -p 7999:7999 -p 5561:5561 holdfast --config /etc/holdfast/holdfast.toml \
#       --publish-listen 0.0.0.0:5561 --publish-token "$TOKEN"

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc builds the C parts of the TLS library (ring) for the static target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.* \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "${TARGET}"
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p holdfast --target "${TARGET}" \
    && cp "target/${TARGET}/release/holdfast" /holdfast

FROM scratch
COPY --from=build /holdfast /holdfast
# Root certificates, for origins and Redis over TLS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY contrib/holdfast.toml /etc/holdfast/holdfast.toml
COPY contrib/routes /etc/holdfast/routes
# Any id without a name: scratch has no /etc/passwd.
USER 65532:65532
EXPOSE 7999 5561
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/holdfast", "health", "--url", "http://127.0.0.1:5561/healthz"]
ENTRYPOINT ["/holdfast"]
CMD ["--config", "/etc/holdfast/holdfast.toml"]
