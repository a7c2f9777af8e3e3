# syntax=docker/dockerfile:1
#
# ct-exporter container image: one static binary on distroless, non-root.
#
# Build:
#   docker build -t ct-exporter:dev --build-arg VERSION=dev --build-arg REVISION=$(git rev-parse HEAD) .
# Run (host network, only CAP_NET_ADMIN):
#   docker run -d --name ct-exporter --network host \
#     --cap-drop ALL --cap-add NET_ADMIN --read-only ct-exporter
#
# The binary carries the file capability cap_net_admin=p (permitted, not
# effective): the non-root user gets CAP_NET_ADMIN when, and only when, the
# runtime leaves it in the bounding set (--cap-add NET_ADMIN, or
# capabilities.add in Kubernetes), and the exporter raises it at start. When
# the runtime withholds it, the binary still starts and says in one line
# that CAP_NET_ADMIN is missing.

ARG GO_VERSION=1.26.8
# Reported by --version and the build info metric, and set as image labels.
ARG VERSION=dev
ARG REVISION=unknown

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION
ARG REVISION
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags="-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION}" \
      -o /out/ct-exporter ./cmd/ct-exporter
RUN setcap cap_net_admin=p /out/ct-exporter

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="ct-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the Linux netfilter connection tracking table" \
      org.opencontainers.image.source="https://github.com/ct-exporter/ct-exporter" \
      org.opencontainers.image.documentation="https://github.com/ct-exporter/ct-exporter/blob/main/docs/INSTALL.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/ct-exporter /bin/ct-exporter
USER 65532:65532
EXPOSE 9549
ENTRYPOINT ["/bin/ct-exporter"]
