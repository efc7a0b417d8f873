import { describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import { ingestCommand } from "../../dev/in-process-runtime.ts";
import { bundledRegistry } from "../../src/config/protocols.ts";
import { loadSettings } from "../../src/config/settings.ts";
import { observe } from "../../src/http/observe.ts";
import { createLogger } from "../../src/logging/logger.ts";
import { createMetrics } from "../../src/metrics/metrics.ts";
import { createRuntime } from "../../src/runtime.ts";

async function setup(env: Record<string, string> = {}) {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  const runtime = await createRuntime({
    settings: loadSettings(env),
    protocols: bundledRegistry(),
    logger: createLogger({ level: "info", destination }),
    publisher: null,
  });
  const call = (path: string, init: RequestInit = {}) => runtime.fetch(new Request(`http://localhost${path}`, init));
  return { runtime, call, lines };
}

describe("request ids and request logs", () => {
  test("a sane X-Request-Id is echoed and logged with method, path, status, duration and job id", async () => {
    const { call, lines } = await setup();
    const response = await call("/v1/commands", { method: "POST", headers: { "x-request-id": "req-42" }, body: JSON.stringify(ingestCommand()) });
    expect(response.headers.get("x-request-id")).toBe("req-42");
    const { jobId } = (await response.json()) as { jobId: string };
    const line = lines.find((l) => l.msg === "request");
    expect(line).toMatchObject({ level: "info", method: "POST", path: "/v1/commands", status: 202, requestId: "req-42", jobId });
    expect(line?.durationMs).toBeNumber();
  });

  test("a missing or unsafe request id is replaced by a fresh one, also on problem answers", async () => {
    const { call, lines } = await setup();
    const response = await call("/v1/jobs/unknown", { headers: { "x-request-id": "bad id\twith spaces" } });
    expect(response.status).toBe(404);
    const id = response.headers.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(lines.find((l) => l.msg === "request")).toMatchObject({ status: 404, requestId: id, path: "/v1/jobs/unknown", jobId: "unknown" });
  });
});

describe("the outermost handler", () => {
  test("an error that escapes the app is a problem+json 500 with a request id, logged, never the runtime's plain text", async () => {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    const metrics = createMetrics({ outboxStats: async () => ({ pending: 0, failed: 0, oldestPendingAgeSeconds: null }) });
    const handler = observe(
      async () => {
        throw new TypeError("Method is forbidden");
      },
      { logger: createLogger({ level: "info", destination }), metrics },
    );
    const response = await handler(new Request("http://localhost/healthz"));
    expect(response.status).toBe(500);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
    expect(((await response.json()) as { type: string }).type).toBe("urn:lucius:problem:internal-error");
    expect(response.headers.get("x-request-id")).toBeString();
    expect(lines.find((l) => l.msg === "unhandled error outside the app")).toMatchObject({ level: "error", method: "GET" });
  });
});

describe("GET /metrics", () => {
  test("counts accepted, replayed and rejected commands by reason, times the intake, and shows the outbox", async () => {
    const { call } = await setup();
    const post = (body: unknown, headers: Record<string, string> = {}) => call("/v1/commands", { method: "POST", headers, body: JSON.stringify(body) });
    await post(ingestCommand(), { "idempotency-key": "k" });
    await post(ingestCommand(), { "idempotency-key": "k" });
    await post(ingestCommand({ tenantId: "bad tenant" }));
    await post(ingestCommand({ requestType: "nope" }));
    const response = await call("/metrics");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/plain");
    const text = await response.text();
    expect(text).toContain('lucius_commands_total{outcome="accepted",reason=""} 1');
    expect(text).toContain('lucius_commands_total{outcome="replayed",reason=""} 1');
    expect(text).toContain('lucius_commands_total{outcome="rejected",reason="validation-failed"} 1');
    expect(text).toContain('lucius_commands_total{outcome="rejected",reason="unknown-request-type"} 1');
    expect(text).toContain("lucius_intake_duration_seconds_count 4");
    expect(text).toContain('lucius_outbox_entries{status="pending"} 1');
    expect(text).toContain('lucius_outbox_entries{status="failed"} 0');
    expect(text).toMatch(/lucius_outbox_oldest_pending_age_seconds \d/);
    for (const name of ["lucius_publish_duration_seconds", "lucius_publish_total", "lucius_sweeper_ticks_total"]) expect(text).toContain(`# TYPE ${name}`);
  });
});

describe("GET /openapi/json", () => {
  test("documents every route, the problem responses and the admin key scheme", async () => {
    const { call } = await setup({ LUCIUS_ADMIN_ENABLED: "true", LUCIUS_ADMIN_API_KEY: "admin-key-0123456789" });
    const response = await call("/openapi/json");
    expect(response.status).toBe(200);
    const document = (await response.json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          { responses?: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>; security?: unknown[]; requestBody?: unknown }
        >
      >;
      components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> };
    };
    expect(document.openapi).toStartWith("3.");
    const routes = Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`));
    for (const route of [
      "POST /v1/commands",
      "GET /v1/jobs/{jobId}",
      "GET /v1/jobs",
      "POST /v1/jobs/{jobId}/steps/{stepId}/events",
      "POST /v1/jobs/{jobId}/cancel",
      "GET /v1/admin/outbox",
      "GET /v1/admin/outbox/stats",
      "POST /v1/admin/outbox/retry",
      "POST /v1/admin/outbox/{outboxId}/retry",
      "GET /healthz",
      "GET /readyz",
      "GET /metrics",
    ])
      expect(routes).toContain(route);
    const intake = document.paths["/v1/commands"]!.post!;
    expect(intake.requestBody).toBeDefined();
    expect(intake.responses?.["422"]?.content?.["application/problem+json"]?.schema?.$ref).toBe("#/components/schemas/Problem");
    expect(document.paths["/v1/admin/outbox/stats"]!.get!.security).toEqual([{ apiKey: [] }, { bearer: [] }]);
    expect(Object.keys(document.components.securitySchemes).sort()).toEqual(["apiKey", "bearer"]);
    expect(document.components.schemas.Problem).toBeDefined();
    expect((await call("/openapi")).status).toBe(200);
  });
});
