import { describe, expect, test } from "bun:test";
import { outboxIdFor, stepIdFor } from "../../src/domain/ids.ts";
import type { Protocol } from "../../src/domain/model.ts";
import { partitionKeyFor, planJob } from "../../src/domain/plan-job.ts";

const protocol: Protocol = {
  requestType: "document.ingest",
  version: 2,
  description: "",
  steps: [
    { name: "enrich", topic: "semantic-intelligence", partitionKey: { kind: "pointer", pointer: "/doc/id" }, maxAttempts: 1, timeoutSeconds: 0 },
    { name: "embed", topic: "vector-ingestion", partitionKey: { kind: "tenantId" }, maxAttempts: 1, timeoutSeconds: 0 },
  ],
};
const jobId = "0190d9a0-0000-7000-8000-000000000001";
const options = {
  jobId,
  command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: "k", payload: { doc: { id: "d-7" } } },
  protocol,
  traceparent: null,
  now: new Date("2026-01-01T00:00:00.000Z"),
  retryDelaySeconds: 30,
};

describe("planJob", () => {
  test("creates every step pending and a directive for the first step only", () => {
    const { job, steps, outbox } = planJob(options);
    expect(job).toMatchObject({ jobId, status: "accepted", protocolVersion: 2, idempotencyKey: "k" });
    expect(steps.map((s) => [s.index, s.name, s.status])).toEqual([
      [0, "enrich", "pending"],
      [1, "embed", "pending"],
    ]);
    expect(outbox).toHaveLength(1);
    expect(outbox[0]).toMatchObject({
      stepId: steps[0]!.stepId,
      topic: "semantic-intelligence",
      partitionKey: "d-7",
      nextAttemptAt: "2026-01-01T00:00:30.000Z",
    });
  });

  test("the same job id always yields the same step and outbox ids (a retried write creates no duplicates)", () => {
    const a = planJob(options);
    const b = planJob({ ...options, now: new Date("2026-01-02T00:00:00.000Z") });
    expect(b.steps.map((s) => s.stepId)).toEqual(a.steps.map((s) => s.stepId));
    expect(b.outbox[0]!.outboxId).toBe(a.outbox[0]!.outboxId);
    expect(new Set([stepIdFor(jobId, 0), stepIdFor(jobId, 1), outboxIdFor(jobId, 0), outboxIdFor(jobId, 0, 1)]).size).toBe(4);
  });
});

describe("partitionKeyFor", () => {
  test("jobId, tenantId and pointer rules", () => {
    expect(partitionKeyFor({ kind: "jobId" }, "j", "t", {})).toBe("j");
    expect(partitionKeyFor({ kind: "tenantId" }, "j", "t", {})).toBe("t");
    expect(partitionKeyFor({ kind: "pointer", pointer: "/a~1b/0" }, "j", "t", { "a/b": [42] })).toBe("42");
  });
  test("a missing or non-scalar pointed value has no key", () => {
    expect(partitionKeyFor({ kind: "pointer", pointer: "/missing" }, "j", "t", {})).toBeUndefined();
    expect(partitionKeyFor({ kind: "pointer", pointer: "/obj" }, "j", "t", { obj: {} })).toBeUndefined();
  });
});

describe("planJob with a graph", () => {
  const step = (name: string, extra: Partial<Protocol["steps"][number]> = {}) => ({
    name,
    topic: name,
    partitionKey: { kind: "jobId" as const },
    maxAttempts: 1,
    timeoutSeconds: 0,
    ...extra,
  });
  const plan = (graph: Protocol, payload: Record<string, unknown> = {}) =>
    planJob({ ...options, protocol: graph, command: { ...options.command, payload: { doc: { id: "d-7" }, ...payload } } });

  test("every step that starts with the job gets its directive at once; the compensation step waits, pending, last", () => {
    const { steps, outbox } = plan({
      ...protocol,
      steps: [step("a", { after: [] }), step("b", { after: [] }), step("c", { after: [0, 1] })],
      onFailure: step("undo"),
    });
    expect(steps.map((s) => [s.name, s.status, s.attempts])).toEqual([
      ["a", "pending", 1],
      ["b", "pending", 1],
      ["c", "pending", 0],
      ["undo", "pending", 0],
    ]);
    expect(outbox.map((entry) => entry.stepId)).toEqual([stepIdFor(jobId, 0), stepIdFor(jobId, 1)]);
  });

  test("a first step whose condition on the payload does not hold is skipped, and the next one starts", () => {
    const { steps, outbox } = plan({ ...protocol, steps: [step("a", { when: { pointer: "/payload/fast", equals: true } }), step("b")] }, { fast: false });
    expect(steps.map((s) => [s.name, s.status])).toEqual([
      ["a", "skipped"],
      ["b", "pending"],
    ]);
    expect(outbox.map((entry) => entry.stepId)).toEqual([stepIdFor(jobId, 1)]);
  });

  test("a job whose every step is skipped has succeeded at once, with nothing to send", () => {
    const { job, steps, outbox } = plan({ ...protocol, steps: [step("a", { when: { pointer: "/payload/x", exists: true } })], onFailure: step("undo") });
    expect(job.status).toBe("succeeded");
    expect(steps.map((s) => s.status)).toEqual(["skipped", "skipped"]);
    expect(outbox).toEqual([]);
  });

  test("maps that start together share the change's first children, so that it stays one transaction", () => {
    const list = Array.from({ length: 30 }, (_, i) => i);
    const mapOver = (name: string) =>
      step(name, { after: [], map: { items: `/payload/${name}`, maxConcurrency: 50, maxItems: 100, toleratedFailurePercent: 0 } });
    const { outbox } = plan({ ...protocol, steps: [mapOver("a"), mapOver("b"), mapOver("c")] }, { a: list, b: list, c: list });
    expect(outbox).toHaveLength(18);
  });
});
