# Presence Bridge image: the Home Assistant add-on and the standalone image for
# Docker, for example on a Raspberry Pi. The release workflow builds the
# add-on images from it per arch with BUILD_VERSION and BUILD_ARCH, as the
# Supervisor does when a fork removes config.yaml's image: line and it builds
# this file on the device with the repository root as context. By hand:
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 \
#     --build-arg BUILD_VERSION=0.1.0 -t presence-bridge:0.1.0 .
#
# The builder always runs on the build machine's own platform and
# cross-compiles a static binary (CGO_ENABLED=0), so no emulation is needed.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
# Set by BuildKit for the platform being built.
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
# Set by the Home Assistant Supervisor; BUILD_ARCH is also the fallback when
# a builder does not set TARGETARCH.
ARG BUILD_ARCH
ARG BUILD_VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN set -eu; \
    os="${TARGETOS:-linux}"; arch="${TARGETARCH:-}"; variant="${TARGETVARIANT:-}"; \
    if [ -z "$arch" ]; then \
      case "${BUILD_ARCH:-}" in \
        aarch64) arch=arm64 ;; \
        amd64|"") arch=amd64 ;; \
        armv7) arch=arm; variant=v7 ;; \
        *) echo "unsupported BUILD_ARCH ${BUILD_ARCH}" >&2; exit 1 ;; \
      esac; \
    fi; \
    goarm=""; \
    if [ "$arch" = arm ]; then goarm="${variant#v}"; goarm="${goarm:-7}"; fi; \
    echo "building presence-bridge ${BUILD_VERSION} for ${os}/${arch}${goarm:+ GOARM=$goarm}"; \
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOARM="$goarm" \
      go build -trimpath \
        -ldflags "-s -w -X main.version=${BUILD_VERSION} -X main.commit=${COMMIT}" \
        -o /out/presence-bridge ./cmd/presence-bridge; \
    mkdir -p /out/data

# Static, non-root runtime: CA certificates and time zones, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG BUILD_VERSION=dev
ARG BUILD_ARCH
LABEL io.hass.type="app" \
      io.hass.name="Presence Bridge" \
      io.hass.version="${BUILD_VERSION}" \
      io.hass.arch="${BUILD_ARCH}" \
      org.opencontainers.image.title="presence-bridge" \
      org.opencontainers.image.description="Microsoft Teams presence in Home Assistant (MQTT discovery) and on Philips Hue lights" \
      org.opencontainers.image.version="${BUILD_VERSION}" \
      org.opencontainers.image.source="https://github.com/presence-bridge/presence-bridge"
COPY --from=build /out/presence-bridge /presence-bridge
# data_dir defaults to ./data: an empty folder the non-root user owns, so a
# volume mounted there (docker-compose.yml) starts out writable.
COPY --from=build --chown=65532:65532 /out/data /config/data
# Standalone: mount presence-bridge.yaml here (or set PRESENCE_BRIDGE_CONFIG).
# The add-on reads its options from the Supervisor instead.
WORKDIR /config
USER 65532:65532
ENTRYPOINT ["/presence-bridge"]
CMD ["run"]
# Asks the daemon's loopback health endpoint (health_addr, 127.0.0.1:8086 by
# default); exit 1 makes the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/presence-bridge", "healthcheck"]
