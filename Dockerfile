# syntax=docker/dockerfile:1.7
# Trunkgate images, one per binary:
#   docker build --target operator -t REGISTRY/trunkgate-operator:0.1.0 .
#   docker build --target edge     -t REGISTRY/trunkgate-edge:0.1.0 .
# Both run as the distroless `nonroot` user (65532) with nothing but the binary, glibc and
# libgcc: no shell, no package manager (TLS is rustls, so no OpenSSL either).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds; the binaries are copied out of
# the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trunkgate-operator -p trunkgate-edge \
 && mkdir -p /out \
 && cp target/release/trunkgate-operator target/release/trunkgate-edge /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
LABEL org.opencontainers.image.title="trunkgate-operator" \
      org.opencontainers.image.description="Trunkgate operator: compiles CarrierTrunk and NumberOwnership objects into the edge snapshot" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/trunkgate-operator /usr/local/bin/trunkgate-operator
USER 65532:65532
# /metrics and /healthz
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/trunkgate-operator"]
CMD ["run"]

FROM gcr.io/distroless/cc-debian12:nonroot AS edge
LABEL org.opencontainers.image.title="trunkgate-edge" \
      org.opencontainers.image.description="Trunkgate SIP edge: B2BUA signalling, carrier ACL and RTP relay" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/trunkgate-edge /usr/local/bin/trunkgate-edge
USER 65532:65532
# Public SIP, internal SIP, admin (/metrics, /healthz, /readyz, /snapshot); RTP ports come from
# --rtp-ports.
EXPOSE 5060/udp 5060/tcp 5080/udp 5080/tcp 9091
ENTRYPOINT ["/usr/local/bin/trunkgate-edge"]
