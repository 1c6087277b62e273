# web-fe: a static binary on an empty base image.
#
#   docker build -t counter-web-fe .
#   docker build --build-arg COUNTER_VERSION=2.0.0 --build-arg COUNTER_ACCENT=#c2410c -t counter-web-fe:2 .
#
# Builds with the classic builder and with BuildKit alike (no BuildKit-only syntax).
# Behind an air gap, point the base images at local stand-ins (scripts/offline-images.sh).

ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=scratch
# Kept equal to the workspace version in Cargo.toml (the end-to-end tests check it).
ARG COUNTER_VERSION=1.0.0

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# Static glibc: the binary needs no shared library, so it runs on `scratch`. glibc 2.34+
# resolves names through /etc/hosts and DNS without NSS modules, so `redis` still resolves.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never

# Dependencies first, against placeholder sources: this layer is reused from cache until
# Cargo.toml or Cargo.lock change, so a source edit does not rebuild the dependencies.
COPY Cargo.toml Cargo.lock ./
COPY web-fe/Cargo.toml web-fe/build.rs web-fe/
COPY tests/Cargo.toml tests/
COPY test-support/Cargo.toml test-support/
RUN mkdir -p web-fe/src web-fe/assets tests/src test-support/src \
 && echo 'fn main() {}' > web-fe/src/main.rs \
 && touch web-fe/src/lib.rs tests/src/lib.rs test-support/src/lib.rs \
          web-fe/assets/style.css web-fe/assets/live.js \
 && target=$(rustc -vV | sed -n 's/^host: //p') \
 && cargo build --release --locked -p web-fe --target "$target" \
 && rm -rf web-fe/src web-fe/assets "target/$target/release/.fingerprint/web-fe-"*

# The application itself. The version and accent colour are fixed at build time, so a
# second image for the rolling-update demo looks visibly different.
COPY web-fe/src web-fe/src
COPY web-fe/templates web-fe/templates
COPY web-fe/assets web-fe/assets
ARG COUNTER_VERSION
ARG COUNTER_ACCENT=#2563eb
RUN target=$(rustc -vV | sed -n 's/^host: //p') \
 && COUNTER_VERSION="$COUNTER_VERSION" COUNTER_ACCENT="$COUNTER_ACCENT" \
    cargo build --release --locked -p web-fe --target "$target" \
 && install -D "target/$target/release/web-fe" /out/web-fe \
 && /out/web-fe --version

FROM ${RUNTIME_IMAGE}
ARG COUNTER_VERSION
ARG REVISION=unknown
# Where the source lives, if it is published: `--build-arg SOURCE_URL=https://...`. Empty
# by default rather than a made-up address.
ARG SOURCE_URL=
LABEL org.opencontainers.image.title="counter web-fe" \
      org.opencontainers.image.description="Counts page views in Redis and shows which replica answered" \
      org.opencontainers.image.version="${COUNTER_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/web-fe /usr/local/bin/web-fe
# Not root: a numeric user needs no /etc/passwd in an empty image.
USER 65532:65532
EXPOSE 8080
ENV PORT=8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/web-fe", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/web-fe"]
