# syntax=docker/dockerfile:1
# Build: the Bun image compiles one self-contained binary (schemas and protocols inside).
FROM oven/bun:1.4.4 AS build
WORKDIR /src
COPY package.json bun.lock bunfig.toml tsconfig.json ./
RUN bun install --frozen-lockfile --production
COPY src ./src
COPY schemas ./schemas
RUN bun run build

# Run: the binary alone on a distroless base (glibc, CA certificates, no shell), as non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build --chown=nonroot:nonroot /src/dist/lucius /usr/local/bin/lucius
ENV NODE_ENV=production \
    LUCIUS_HOST=0.0.0.0 \
    LUCIUS_PORT=8000
USER nonroot
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/lucius", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/lucius"]
CMD ["serve"]
