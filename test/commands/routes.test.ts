import { describe, expect, test } from "bun:test";
import { deferred, eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createRecordingPublisher } from "../../dev/recording-publisher.ts";
import { StorageUnavailableError } from "../../src/domain/errors.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

const PROBLEM = "application/problem+json";

async function problemOf(response: Response) {
  expect(response.headers.get("content-type")).toBe(PROBLEM);
  return (await response.json()) as { type: string; status: number; detail: string; errors?: { path: string; message: string }[] };
}

describe("POST /v1/commands: accepted", () => {
  test("answers 202 with the job id, Location, and stores job, steps and the first directive", async () => {
    const { postCommand, runtime } = await startTestRuntime();
    const response = await postCommand(ingestCommand());
    expect(response.status).toBe(202);
    const body = (await response.json()) as Record<string, string>;
    expect(body).toEqual({
      jobId: expect.stringMatching(/^[0-9a-f-]{36}$/),
      status: "accepted",
      requestType: "document.ingest",
      tenantId: "acme",
      createdAt: expect.any(String),
    });
    expect(response.headers.get("location")).toBe(`/v1/jobs/${body.jobId}`);
    expect(response.headers.get("idempotent-replayed")).toBeNull();

    const stored = await runtime.store.getJob(body.jobId!);
    expect(stored?.job.status).toBe("accepted");
    expect(stored?.steps.map((s) => [s.index, s.name, s.topic, s.status])).toEqual([
      [0, "ocr", "ocr-requests", "pending"],
      [1, "embed", "vector-ingestion", "pending"],
      [2, "enrich", "semantic-intelligence", "pending"],
    ]);
    expect(stored?.outbox).toHaveLength(1);
    expect(stored?.outbox[0]).toMatchObject({
      stepId: stored?.steps[0]?.stepId,
      topic: "ocr-requests",
      partitionKey: body.jobId,
      status: "pending",
      attempts: 0,
    });
  });

  test("a fresh directive is due for the sweeper only after LUCIUS_OUTBOX_RETRY_DELAY", async () => {
    const now = new Date("2026-01-01T00:00:00.000Z");
    const { postCommand, runtime } = await startTestRuntime({ env: { LUCIUS_OUTBOX_RETRY_DELAY: "45" }, now: () => now });
    const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
    const stored = await runtime.store.getJob(jobId);
    expect(stored?.outbox[0]?.nextAttemptAt).toBe("2026-01-01T00:00:45.000Z");
  });

  test("accepts a body without a Content-Type header as JSON", async () => {
    const { request } = await startTestRuntime();
    const response = await request("/v1/commands", { method: "POST", body: JSON.stringify(ingestCommand()) });
    expect(response.status).toBe(202);
  });
});

describe("POST /v1/commands: bad input", () => {
  test("malformed JSON is a 400 problem", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand('{"requestType": "document.ingest",');
    expect(response.status).toBe(400);
    expect((await problemOf(response)).type).toEndWith("malformed-json");
  });

  test("an empty body is a 400 problem", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand("");
    expect(response.status).toBe(400);
    expect((await problemOf(response)).type).toEndWith("malformed-json");
  });

  test("a JSON body that is not an object is a 422 problem", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand("[1,2]");
    expect(response.status).toBe(422);
    await problemOf(response);
  });

  test("every envelope violation is listed with its JSON pointer, unknown fields included", async () => {
    const { postCommand, runtime } = await startTestRuntime();
    const response = await postCommand({ requestType: "Bad Type", tenantId: "ac me", correlationId: "x".repeat(129), payload: 7, extra: true });
    expect(response.status).toBe(422);
    const problem = await problemOf(response);
    expect(problem.type).toEndWith("validation-failed");
    expect(problem.errors?.map((e) => e.path).sort()).toEqual(["/correlationId", "/extra", "/payload", "/requestType", "/tenantId"]);
    expect((await runtime.store.listJobs("acme", { limit: 10, cursor: null })).items).toHaveLength(0);
  });

  test("a missing envelope field is named", async () => {
    const { postCommand } = await startTestRuntime();
    const { tenantId: _omit, ...command } = ingestCommand();
    const problem = await problemOf(await postCommand(command));
    expect(problem.status).toBe(422);
    expect(problem.errors?.map((e) => e.path)).toEqual(["/tenantId"]);
  });

  test("every payload violation of every step's schema is listed under /payload, nothing stored", async () => {
    const { postCommand, runtime } = await startTestRuntime();
    const response = await postCommand(ingestCommand({ payload: { documentUri: "not a uri", contentType: "text/plain", language: "!!", pages: { from: 0 } } }));
    expect(response.status).toBe(422);
    const problem = await problemOf(response);
    expect(problem.type).toEndWith("validation-failed");
    const paths = problem.errors!.map((e) => e.path).sort();
    expect(paths).toEqual(["/payload/contentType", "/payload/documentId", "/payload/documentUri", "/payload/language", "/payload/pages/from"]);
    // ocr and enrich both require documentId: reported once.
    expect(problem.errors!.filter((e) => e.path === "/payload/documentId")).toHaveLength(1);
    expect(problem.errors!.find((e) => e.path === "/payload/contentType")?.message).toContain("application/pdf");
    expect((await runtime.store.listJobs("acme", { limit: 10, cursor: null })).items).toHaveLength(0);
  });

  test("an unknown requestType is a 422 problem of its own type", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand(ingestCommand({ requestType: "document.unknown" }));
    expect(response.status).toBe(422);
    const problem = await problemOf(response);
    expect(problem.type).toEndWith("unknown-request-type");
    expect(problem.errors?.[0]?.path).toBe("/requestType");
  });

  test("an invalid Idempotency-Key header is a 400 problem", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand(ingestCommand(), { "idempotency-key": "é".repeat(3) });
    expect(response.status).toBe(400);
    expect((await problemOf(response)).errors?.[0]?.path).toBe("/headers/idempotency-key");
  });

  test("an Idempotency-Key header and body field that differ are a 400 problem", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand(ingestCommand({ idempotencyKey: "k-body" }), { "idempotency-key": "k-header" });
    expect(response.status).toBe(400);
    expect((await problemOf(response)).errors?.[0]?.path).toBe("/idempotencyKey");
  });

  test("an idempotencyKey body field longer than 255 characters is a 422", async () => {
    const { postCommand } = await startTestRuntime();
    const response = await postCommand(ingestCommand({ idempotencyKey: "k".repeat(256) }));
    expect(response.status).toBe(422);
    expect((await problemOf(response)).errors?.[0]?.path).toBe("/idempotencyKey");
  });
});

describe("POST /v1/commands: idempotency", () => {
  test("the same key and request replays the original job with Idempotent-Replayed, no new job", async () => {
    const { postCommand, runtime } = await startTestRuntime();
    const first = await postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    const firstBody = (await first.json()) as { jobId: string };
    // Same request, different key order and the key in the body instead of the header.
    const again = await postCommand({
      payload: ingestCommand().payload,
      idempotencyKey: "k-1",
      correlationId: "c-42",
      tenantId: "acme",
      requestType: "document.ingest",
    });
    expect(again.status).toBe(202);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(((await again.json()) as { jobId: string }).jobId).toBe(firstBody.jobId);
    expect((await runtime.store.listJobs("acme", { limit: 10, cursor: null })).items).toHaveLength(1);
  });

  test("the same key with a different request is a 422 idempotency-key-reused", async () => {
    const { postCommand } = await startTestRuntime();
    await postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    const response = await postCommand(ingestCommand({ correlationId: "c-43" }), { "idempotency-key": "k-1" });
    expect(response.status).toBe(422);
    expect((await problemOf(response)).type).toEndWith("idempotency-key-reused");
  });

  test("keys are scoped per tenant: the same key in another tenant creates another job", async () => {
    const { postCommand } = await startTestRuntime();
    const a = (await (await postCommand(ingestCommand(), { "idempotency-key": "k-1" })).json()) as { jobId: string };
    const response = await postCommand(ingestCommand({ tenantId: "globex" }), { "idempotency-key": "k-1" });
    expect(response.status).toBe(202);
    expect(response.headers.get("idempotent-replayed")).toBeNull();
    expect(((await response.json()) as { jobId: string }).jobId).not.toBe(a.jobId);
  });

  test("while the first request is still being stored, the same key gets 409 with Retry-After", async () => {
    const memory = createMemoryStore();
    const gate = deferred();
    const entered = deferred();
    let calls = 0;
    const slow: JobStore = {
      ...memory,
      // The first create claims its key at once but stores its job only when the gate opens.
      async createJob(aggregate, claim) {
        if (calls++ > 0) return memory.createJob(aggregate, claim);
        await memory.createJob({ job: { ...aggregate.job, jobId: `${aggregate.job.jobId}-decoy` }, steps: [], outbox: [] }, claim);
        entered.resolve();
        await gate.promise;
        return memory.createJob(aggregate, null);
      },
    };
    const { postCommand } = await startTestRuntime({ store: slow });
    const first = postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    await entered.promise;
    const second = await postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    expect(second.status).toBe(409);
    expect(Number(second.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await problemOf(second)).type).toEndWith("idempotency-key-in-flight");
    gate.resolve();
    expect((await first).status).toBe(202);
    const third = await postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    expect(third.status).toBe(202);
    expect(third.headers.get("idempotent-replayed")).toBe("true");
  });

  test("50 parallel requests with one key create exactly one job; every answer is 202 or 409", async () => {
    const { postCommand, runtime } = await startTestRuntime();
    const responses = await Promise.all(Array.from({ length: 50 }, () => postCommand(ingestCommand(), { "idempotency-key": "burst" })));
    const statuses = responses.map((r) => r.status);
    expect(statuses.every((s) => s === 202 || s === 409)).toBe(true);
    const jobIds = new Set(await Promise.all(responses.filter((r) => r.status === 202).map(async (r) => ((await r.json()) as { jobId: string }).jobId)));
    expect(jobIds.size).toBe(1);
    expect(responses.filter((r) => r.status === 202 && r.headers.get("idempotent-replayed") === null)).toHaveLength(1);
    expect((await runtime.store.listJobs("acme", { limit: 100, cursor: null })).items).toHaveLength(1);
  });

  test("a write that failed after claiming the key: a retry after the claim timeout completes the job under the claimed id", async () => {
    let clock = new Date("2026-01-01T00:00:00.000Z");
    const memory = createMemoryStore();
    let crash = true;
    const crashing: JobStore = {
      ...memory,
      async createJob(aggregate, claim) {
        if (!crash) return memory.createJob(aggregate, claim);
        // The claim lands, the job does not: store a decoy job under the claim instead.
        const decoy = { job: { ...aggregate.job, jobId: `${aggregate.job.jobId}-decoy` }, steps: [], outbox: [] };
        await memory.createJob(decoy, claim);
        throw new StorageUnavailableError("connection reset");
      },
    };
    const { postCommand } = await startTestRuntime({ store: crashing, now: () => clock });
    expect((await postCommand(ingestCommand(), { "idempotency-key": "k-1" })).status).toBe(503);
    crash = false;
    expect((await postCommand(ingestCommand(), { "idempotency-key": "k-1" })).status).toBe(409);
    clock = new Date(clock.getTime() + 60_000);
    const retried = await postCommand(ingestCommand(), { "idempotency-key": "k-1" });
    expect(retried.status).toBe(202);
    const { jobId } = (await retried.json()) as { jobId: string };
    const probe = await memory.createJob(
      { job: { ...(await memory.getJob(jobId))!.job, jobId: "probe" }, steps: [], outbox: [] },
      { tenantId: "acme", key: "k-1", fingerprint: "-", jobId: "-", createdAt: "-" },
    );
    expect(probe.outcome === "key-taken" && probe.existing.jobId).toBe(jobId);
    expect((await memory.getJob(jobId))?.outbox).toHaveLength(1);
  });
});

describe("POST /v1/commands: fast-path publishing", () => {
  test("after the 202 the first step's directive is published, then marked sent, step initiated, job in progress", async () => {
    const recording = createRecordingPublisher();
    const { postCommand, request } = await startTestRuntime({ publisher: recording.publisher });
    const response = await postCommand(ingestCommand(), { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
    const { jobId } = (await response.json()) as { jobId: string };
    const job = await eventually(
      async () => {
        const view = (await (await request(`/v1/jobs/${jobId}`)).json()) as {
          status: string;
          steps: { status: string }[];
          outbox: { status: string; outboxId: string; attempts: number; sentAt: string | null }[];
        };
        return view.status === "in_progress" && view;
      },
      { what: "job in progress" },
    );
    expect(job.steps.map((s) => s.status)).toEqual(["initiated", "pending", "pending"]);
    expect(job.outbox[0]).toMatchObject({ status: "sent", attempts: 1, sentAt: expect.any(String) });
    expect(recording.published).toHaveLength(1);
    const [{ topic, message }] = recording.published as [(typeof recording.published)[0]];
    expect(topic).toBe("ocr-requests");
    expect(message.messageId).toBe(job.outbox[0]!.outboxId);
    expect(message.subject).toBe("document.ingest/ocr");
    expect(message.correlationId).toBe("c-42");
    expect(message.partitionKey).toBe(jobId);
    expect(message.body).toMatchObject({
      jobId,
      stepName: "ocr",
      stepIndex: 0,
      requestType: "document.ingest",
      tenantId: "acme",
      payload: ingestCommand().payload,
    });
    expect(message.applicationProperties).toMatchObject({
      jobId,
      stepName: "ocr",
      tenantId: "acme",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    });
  });

  test("a broker failure still answers 202 and records the attempt on the entry", async () => {
    const recording = createRecordingPublisher();
    recording.failWith("connection refused", true);
    const { postCommand, runtime } = await startTestRuntime({ publisher: recording.publisher });
    const response = await postCommand(ingestCommand());
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    const entry = await eventually(async () => {
      const stored = await runtime.store.getJob(jobId);
      return stored?.outbox[0]?.attempts === 1 && stored.outbox[0];
    });
    expect(entry).toMatchObject({ status: "pending", lastError: "connection refused", nextAttemptAt: expect.any(String) });
    expect((await runtime.store.getJob(jobId))?.job.status).toBe("accepted");
  });

  test("no publisher configured: nothing is published, the entry stays pending", async () => {
    const { postCommand, runtime } = await startTestRuntime({ publisher: null });
    const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
    expect(runtime.dispatcher).toBeNull();
    const stored = await runtime.store.getJob(jobId);
    expect(stored?.outbox[0]).toMatchObject({ status: "pending", attempts: 0 });
  });
});

describe("POST /v1/commands: storage down", () => {
  test("an unavailable store answers 503 with Retry-After and leaves nothing that a retry cannot finish", async () => {
    const memory = createMemoryStore();
    let down = true;
    const flaky: JobStore = {
      ...memory,
      async createJob(aggregate, claim) {
        if (down) throw new StorageUnavailableError("table service did not answer", { retryAfterSeconds: 2 });
        return memory.createJob(aggregate, claim);
      },
    };
    const { postCommand } = await startTestRuntime({ store: flaky, env: {} });
    const response = await postCommand(ingestCommand());
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("2");
    const problem = await problemOf(response);
    expect(problem.type).toEndWith("storage-unavailable");
    expect((await memory.listJobs("acme", { limit: 10, cursor: null })).items).toHaveLength(0);
    down = false;
    expect((await postCommand(ingestCommand())).status).toBe(202);
  });
});
