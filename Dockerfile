# Both binaries in one small image: the data plane (`restreamer`, the
# entrypoint) and the operator (`restreamer-operator`).
#   docker build -t restreamer:dev .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p restreamer -p restreamer-operator \
 && strip target/release/restreamer target/release/restreamer-operator

# distroless: glibc and CA certificates, no shell, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/restreamer /usr/local/bin/restreamer
COPY --from=build /src/target/release/restreamer-operator /usr/local/bin/restreamer-operator
COPY examples/sample.ts /usr/share/restreamer/sample.ts
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/restreamer"]
