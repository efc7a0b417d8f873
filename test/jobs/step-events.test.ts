/**
 * Workers' step events drive a job to its end, on every backend: the next step's directive is
 * published only after the previous step succeeded, and every transition goes through the outbox.
 */
import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../dev/azurite.ts";
import { deferred, eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createRecordingPublisher } from "../../dev/recording-publisher.ts";
import { buildRegistry } from "../../src/config/protocols.ts";
import { dueIndexTable, ttlIndexTable } from "../../src/config/settings.ts";
import { stepIdFor } from "../../src/domain/ids.ts";
import { MAX_MESSAGE_DATA_BYTES } from "../../src/domain/plan-job.ts";
import { recordPublishFailure, resetFailedEntry } from "../../src/domain/transitions.ts";
import type { Publisher } from "../../src/outbox/publisher.ts";
import { createSingleTableStore } from "../../src/storage/azure/single-table-store.ts";
import type { JobChanges, JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";
import { withRecentJobs } from "../../src/storage/recent-jobs.ts";
import { type Backend, storeFor } from "../support/stores.ts";

/** document.ingest as bundled, but `embed` may be tried twice. */
const retrying = buildRegistry(
  {
    protocols: [
      {
        requestType: "document.ingest",
        version: 1,
        steps: [
          { name: "ocr", topic: "ocr-requests", payloadSchema: { type: "object", required: ["documentId"] }, partitionKey: "jobId" },
          { name: "embed", topic: "vector-ingestion", payloadSchema: { type: "object" }, partitionKey: "tenantId", maxAttempts: 2 },
          { name: "enrich", topic: "semantic-intelligence", payloadSchema: { type: "object" }, partitionKey: "/documentId" },
        ],
      },
    ],
  },
  { source: "test", readSchema: () => ({}) },
);

type View = {
  status: string;
  steps: {
    stepId: string;
    status: string;
    attempts: number;
    result: unknown;
    error: unknown;
    progress: unknown;
    startedAt: string | null;
    finishedAt: string | null;
  }[];
  outbox: { outboxId: string; stepId: string; status: string; lastError: string | null }[];
};

async function setup(backend: Backend) {
  const recording = createRecordingPublisher();
  const service = await startTestRuntime({ store: await storeFor(backend), publisher: recording.publisher, protocols: retrying });
  const submit = async () => ((await (await service.postCommand(ingestCommand())).json()) as { jobId: string }).jobId;
  const view = async (jobId: string) => (await (await service.request(`/v1/jobs/${jobId}`)).json()) as View;
  const event = (jobId: string, stepId: string, body: Record<string, unknown>) =>
    service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  /** Waits until the step's newest directive is sent, as a worker would before answering. */
  const dispatched = (jobId: string, stepIndex: number, count = 1) =>
    eventually(
      async () => {
        const v = await view(jobId);
        const stepId = v.steps[stepIndex]!.stepId;
        return v.outbox.filter((o) => o.stepId === stepId && o.status === "sent").length === count && v;
      },
      { what: `step ${stepIndex} dispatched ${count}x` },
    );
  return { ...service, recording, submit, view, event, dispatched };
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`step events: ${backend}`, () => {
    test("each success dispatches the next step; the last one ends the job succeeded, results kept", async () => {
      const { submit, event, dispatched, view, recording } = await setup(backend);
      const jobId = await submit();
      for (let index = 0; index < 3; index++) {
        const v = await dispatched(jobId, index);
        expect(
          v.steps
            .map((s) => s.status)
            .slice(index + 1)
            .every((s) => s === "pending"),
        ).toBe(true);
        const response = await event(jobId, v.steps[index]!.stepId, { eventId: `e-${index}`, status: "succeeded", result: { pages: index + 1 } });
        expect(response.status).toBe(202);
        expect(await response.json()).toMatchObject({ outcome: "applied", stepStatus: "succeeded", jobStatus: index === 2 ? "succeeded" : "in_progress" });
      }
      const done = await view(jobId);
      expect(done.status).toBe("succeeded");
      expect(done.steps.map((s) => [s.status, s.result, s.attempts])).toEqual([
        ["succeeded", { pages: 1 }, 1],
        ["succeeded", { pages: 2 }, 1],
        ["succeeded", { pages: 3 }, 1],
      ]);
      expect(done.steps.every((s) => s.startedAt !== null && s.finishedAt !== null)).toBe(true);
      expect(recording.published.map((p) => [p.topic, p.message.subject, p.message.partitionKey])).toEqual([
        ["ocr-requests", "document.ingest/ocr", jobId],
        ["vector-ingestion", "document.ingest/embed", "acme"],
        ["semantic-intelligence", "document.ingest/enrich", "d1"],
      ]);
      // Each step's message carries what the steps before it produced.
      expect(recording.published.map((p) => p.message.body.results)).toEqual([{}, { ocr: { pages: 1 } }, { ocr: { pages: 1 }, embed: { pages: 2 } }]);
    });

    test("progress with percent and message shows on the job view, the latest per step", async () => {
      const { submit, event, dispatched, view } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      const stepId = v.steps[0]!.stepId;
      expect((await event(jobId, stepId, { eventId: "p1", status: "progress", percent: 20, message: "page 1 of 5" })).status).toBe(202);
      expect((await event(jobId, stepId, { eventId: "p2", status: "progress", percent: 60, message: "page 3 of 5" })).status).toBe(202);
      expect((await view(jobId)).steps[0]).toMatchObject({ status: "initiated", progress: { percent: 60, message: "page 3 of 5" } });
      expect((await event(jobId, stepId, { eventId: "p3", status: "progress", percent: 101 })).status).toBe(422);
    });

    test("a result too large to hand on to the next step is refused with a 422 and changes nothing", async () => {
      const { submit, event, dispatched, view } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      const huge = { text: "x".repeat(MAX_MESSAGE_DATA_BYTES) };
      const response = await event(jobId, v.steps[0]!.stepId, { eventId: "big", status: "succeeded", result: huge });
      expect(response.status).toBe(422);
      const problem = (await response.json()) as { type: string; detail: string; errors: { path: string }[] };
      expect(problem.type).toEndWith("validation-failed");
      expect(problem.detail).toContain("over the limit of");
      expect(problem.errors.map((e) => e.path)).toEqual(["/result"]);
      const after = await view(jobId);
      expect(after.steps.map((s) => s.status)).toEqual(["initiated", "pending", "pending"]);
      // The worker can still report a smaller result.
      expect((await event(jobId, v.steps[0]!.stepId, { eventId: "small", status: "succeeded", result: { pages: 1 } })).status).toBe(202);
    });

    test("a failure ends the job failed and cancels the steps that never ran; nothing more is dispatched", async () => {
      const { submit, event, dispatched, view, recording } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      const response = await event(jobId, v.steps[0]!.stepId, { eventId: "e-1", status: "failed", error: { code: "UNREADABLE", message: "corrupt PDF" } });
      expect(await response.json()).toMatchObject({ outcome: "applied", stepStatus: "failed", jobStatus: "failed" });
      const after = await view(jobId);
      expect(after.steps.map((s) => s.status)).toEqual(["failed", "cancelled", "cancelled"]);
      expect(after.steps[0]!.error).toEqual({ code: "UNREADABLE", message: "corrupt PDF", retryable: false });
      expect(recording.published).toHaveLength(1);
    });

    test("a retryable failure is dispatched again up to the step's maxAttempts, then fails the job", async () => {
      const { submit, event, dispatched, view, recording } = await setup(backend);
      const jobId = await submit();
      let v = await dispatched(jobId, 0);
      await event(jobId, v.steps[0]!.stepId, { eventId: "ok-0", status: "succeeded" });
      v = await dispatched(jobId, 1);
      const embed = v.steps[1]!.stepId;
      const first = await event(jobId, embed, { eventId: "f-1", status: "failed", error: { code: "BUSY", message: "model overloaded", retryable: true } });
      expect(await first.json()).toMatchObject({ outcome: "applied", stepStatus: "initiated", jobStatus: "in_progress" });
      v = await dispatched(jobId, 1, 2);
      expect(v.steps[1]!.attempts).toBe(2);
      const second = await event(jobId, embed, { eventId: "f-2", status: "failed", error: { code: "BUSY", message: "still overloaded", retryable: true } });
      expect(await second.json()).toMatchObject({ outcome: "applied", stepStatus: "failed", jobStatus: "failed" });
      expect((await view(jobId)).steps.map((s) => s.status)).toEqual(["succeeded", "failed", "cancelled"]);
      const embedIds = recording.published.filter((p) => p.topic === "vector-ingestion").map((p) => p.message.messageId);
      expect(new Set(embedIds).size).toBe(2);
    });

    test("a repeated event and a late event change nothing and say so", async () => {
      const { submit, event, dispatched, view } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      const stepId = v.steps[0]!.stepId;
      await event(jobId, stepId, { eventId: "e-1", status: "progress" });
      expect(await (await event(jobId, stepId, { eventId: "e-1", status: "progress" })).json()).toMatchObject({ outcome: "duplicate" });
      await event(jobId, stepId, { eventId: "e-2", status: "succeeded", result: { a: 1 } });
      const before = await view(jobId);
      expect(await (await event(jobId, stepId, { eventId: "e-2", status: "succeeded" })).json()).toMatchObject({ outcome: "duplicate" });
      expect(await (await event(jobId, stepId, { eventId: "e-3", status: "failed", error: { code: "X", message: "late" } })).json()).toMatchObject({
        outcome: "ignored",
        reason: "step is succeeded",
      });
      const after = await view(jobId);
      expect(after.steps[0]).toEqual(before.steps[0]!);
      expect(after.status).toBe("in_progress");
    });

    test("an event for a step not dispatched yet is ignored", async () => {
      const { submit, event, dispatched, view } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      const response = await event(jobId, v.steps[2]!.stepId, { eventId: "early", status: "succeeded" });
      expect(await response.json()).toMatchObject({ outcome: "ignored", reason: "step has not been dispatched" });
      expect((await view(jobId)).steps[2]!.status).toBe("pending");
    });

    test("without a broker, events over HTTP alone take the job to succeeded (no 409 for a legitimate finish)", async () => {
      const service = await startTestRuntime({ store: await storeFor(backend), publisher: null, protocols: retrying });
      const { jobId } = (await (await service.postCommand(ingestCommand())).json()) as { jobId: string };
      const view = async () => (await (await service.request(`/v1/jobs/${jobId}`)).json()) as View;
      for (let index = 0; index < 3; index++) {
        const { stepId } = (await view()).steps[index]!;
        const response = await service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ eventId: `done-${index}`, status: "succeeded", result: { index } }),
        });
        expect(response.status).toBe(202);
        expect(await response.json()).toMatchObject({ outcome: "applied", stepStatus: "succeeded", jobStatus: index < 2 ? "in_progress" : "succeeded" });
      }
      const done = await view();
      expect(done.status).toBe("succeeded");
      expect(done.steps.map((s) => s.result)).toEqual([{ index: 0 }, { index: 1 }, { index: 2 }]);
    });

    test("cancel ends the job, cancels open steps, withdraws unsent directives; then events are late", async () => {
      const { submit, event, dispatched, view, request, recording } = await setup(backend);
      const jobId = await submit();
      const v = await dispatched(jobId, 0);
      recording.failWith("broker down", true);
      await event(jobId, v.steps[0]!.stepId, { eventId: "ok", status: "succeeded" });
      await eventually(async () => (await view(jobId)).outbox.some((o) => o.stepId === v.steps[1]!.stepId), { what: "the next directive" });
      const cancelled = await request(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      expect(cancelled.status).toBe(200);
      expect(await cancelled.json()).toEqual({ jobId, status: "cancelled" });
      const after = await view(jobId);
      expect(after.steps.map((s) => s.status)).toEqual(["succeeded", "cancelled", "cancelled"]);
      expect(after.outbox.filter((o) => o.status === "pending")).toEqual([]);
      expect((await request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(409);
      expect(await (await event(jobId, v.steps[1]!.stepId, { eventId: "late", status: "succeeded" })).json()).toMatchObject({
        outcome: "ignored",
        reason: "job is cancelled",
      });
    });
  });
}

/**
 * Two replicas' stores on one fresh ledger: `here` keeps the jobs it saw, as the service does,
 * and counts its reads of a job; `elsewhere` is another replica's.
 */
async function twoLedgerReplicas() {
  const { connection } = await azurite();
  const tables = freshTables();
  const options = { connection, tables: { ...tables, due: dueIndexTable(tables.ledger), ttl: ttlIndexTable(tables.ledger) } };
  const inner = createSingleTableStore(options);
  const reads = { count: 0 };
  const here = withRecentJobs(
    {
      ...inner,
      getJob: (jobId) => {
        reads.count++;
        return inner.getJob(jobId);
      },
    },
    { maxRowsPerChange: 100 },
  );
  return { here, elsewhere: createSingleTableStore(options), reads };
}

describe("step events: ledger, a job this replica kept and another changed", () => {
  test("an event decided against the kept copy reads nothing; a copy gone stale loses its write and the event is decided again, fresh", async () => {
    const { here, elsewhere, reads } = await twoLedgerReplicas();
    const a = await startTestRuntime({ store: here, publisher: createRecordingPublisher().publisher, protocols: retrying });
    const b = await startTestRuntime({ store: elsewhere, publisher: null, protocols: retrying });
    const { jobId } = (await (await a.postCommand(ingestCommand())).json()) as { jobId: string };
    const sent = (index: number) =>
      eventually(async () => (await elsewhere.getJob(jobId))!.outbox.filter((o) => o.stepIndex === index && o.status === "sent").length === 1, {
        what: `step ${index} sent`,
      });
    const event = (runtime: typeof a, index: number, eventId: string) =>
      runtime.request(`/v1/jobs/${jobId}/steps/${stepIdFor(jobId, index)}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ eventId, status: "succeeded" }),
      });

    await sent(0);
    reads.count = 0;
    expect(await (await event(a, 0, "e0")).json()).toMatchObject({ outcome: "applied", jobStatus: "in_progress" });
    expect(reads.count).toBe(0);

    await sent(1);
    // Another replica cancels the job: this one's copy still has it running.
    expect((await b.request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(200);
    expect(await (await event(a, 1, "e1")).json()).toMatchObject({ outcome: "ignored", reason: "job is cancelled" });
    expect(reads.count).toBeGreaterThan(0);
    const stored = (await elsewhere.getJob(jobId))!;
    expect(stored.job.status).toBe("cancelled");
    expect(stored.steps.map((s) => s.status)).toEqual(["succeeded", "cancelled", "cancelled"]);
  });
});

describe("step events: ledger, a row of a kept job moved on elsewhere without the job's row", () => {
  test("an operator's reset of a failed directive on another replica refuses the change decided on the copy: the failure settles the reset directive", async () => {
    const { here, elsewhere, reads } = await twoLedgerReplicas();
    const a = await startTestRuntime({ store: here, publisher: null, protocols: retrying });
    const { jobId } = (await (await a.postCommand(ingestCommand())).json()) as { jobId: string };
    const now = new Date().toISOString();
    // This replica parks the directive failed; another resets it to pending.
    const kept = here.recentJob!(jobId)!;
    const [failed] = (
      await here.saveChanges(jobId, {
        outbox: [recordPublishFailure(kept.outbox[0]!, { error: "broker said no", retryable: false, now, nextAttemptAt: now, maxAttempts: 1 })],
      })
    ).outbox;
    expect(here.recentJob!(jobId)!.outbox[0]!.status).toBe("failed");
    await elsewhere.saveChanges(jobId, { outbox: [resetFailedEntry(failed!, now)] });

    reads.count = 0;
    const response = await a.request(`/v1/jobs/${jobId}/steps/${stepIdFor(jobId, 0)}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "f-0", status: "failed", error: { code: "UNREADABLE", message: "corrupt PDF" } }),
    });
    expect(await response.json()).toMatchObject({ outcome: "applied", jobStatus: "failed" });
    expect(reads.count).toBeGreaterThan(0);
    const stored = (await elsewhere.getJob(jobId))!;
    expect(stored.steps.map((s) => s.status)).toEqual(["failed", "cancelled", "cancelled"]);
    // Decided fresh, the reset directive is the one its worker answered: marked sent, not left pending.
    expect(stored.outbox.map((o) => o.status)).toEqual(["sent"]);
  });
});

describe("step events: an answer that commits while its directive's publish returns", () => {
  test("is waited for by the dispatcher, which then stores nothing of its own for that directive", async () => {
    const inner = createMemoryStore();
    const held = deferred();
    const release = deferred();
    let holding = false;
    let answerHeld = false;
    const writes: JobChanges[] = [];
    const gated: JobStore = {
      ...inner,
      async saveChanges(jobId, changes) {
        writes.push(changes);
        // The worker's answer (a change with its history entry): held until someone waits for it, or writes past it.
        if (changes.history && !answerHeld) {
          answerHeld = holding = true;
          held.resolve();
          await release.promise;
          holding = false;
        } else release.resolve();
        return inner.saveChanges(jobId, changes);
      },
    };
    const kept = withRecentJobs(gated, { maxRowsPerChange: 100 });
    const store: JobStore = {
      ...kept,
      // The dispatcher waiting for the answer in flight lets it through.
      settled: async (jobId) => {
        if (holding) release.resolve();
        return kept.settled!(jobId);
      },
    };
    let answer: Promise<Response> | null = null;
    let service: Awaited<ReturnType<typeof startTestRuntime>> | null = null;
    const publisher: Publisher = {
      async publish(_topic, messages) {
        if (!answer) {
          const body = messages[0]!.body as { jobId: string; stepId: string };
          // The worker answers before the publish has returned.
          answer = service!.request(`/v1/jobs/${body.jobId}/steps/${body.stepId}/events`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ eventId: "fast", status: "succeeded" }),
          });
          await held.promise;
        }
        return messages.map(() => ({ ok: true as const }));
      },
      async check() {},
      async close() {},
    };
    service = await startTestRuntime({ store, publisher });
    const { jobId } = (await (await service.postCommand(ingestCommand())).json()) as { jobId: string };
    await eventually(() => answer !== null, { what: "the first directive published" });
    expect(await (await answer!).json()).toMatchObject({ outcome: "applied" });
    await service.runtime.dispatcher!.drain();
    const first = (await inner.getJob(jobId))!.outbox.find((o) => o.stepIndex === 0)!;
    expect(first.status).toBe("sent");
    // Only the answer's change wrote the first directive: no publish outcome raced it.
    expect(writes.filter((w) => !w.history && w.outbox?.some((o) => o.outboxId === first.outboxId))).toEqual([]);
  });
});

describe("step events: bad input", () => {
  test("unknown job or step is 404; a malformed event 422; a body that names another job 400", async () => {
    const { submit, event, dispatched } = await setup("memory");
    const jobId = await submit();
    const v = await dispatched(jobId, 0);
    const stepId = v.steps[0]!.stepId;
    expect((await event("0190d9a0-0000-7000-8000-000000000000", stepId, { eventId: "e", status: "progress" })).status).toBe(404);
    expect((await event(jobId, "no-such-step", { eventId: "e", status: "progress" })).status).toBe(404);
    const malformed = await event(jobId, stepId, { eventId: "", status: "done", extra: 1 });
    expect(malformed.status).toBe(422);
    expect(((await malformed.json()) as { errors: { path: string }[] }).errors.map((e) => e.path).sort()).toEqual(["/eventId", "/extra", "/status"]);
    expect((await event(jobId, stepId, { jobId: "other", eventId: "e", status: "progress" })).status).toBe(400);
  });
});

test("three deliveries of one event at once on memory: one applied, the others duplicates", async () => {
  const recording = createRecordingPublisher();
  const service = await startTestRuntime({ store: createMemoryStore(), publisher: recording.publisher });
  const { jobId } = (await (await service.postCommand(ingestCommand())).json()) as { jobId: string };
  await service.runtime.dispatcher!.drain();
  const send = async () =>
    (
      (await (
        await service.request(`/v1/jobs/${jobId}/steps/${stepIdFor(jobId, 0)}/events`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ eventId: "once", status: "succeeded", result: { pages: 1 } }),
        })
      ).json()) as { outcome: string }
    ).outcome;
  expect((await Promise.all([send(), send(), send()])).sort()).toEqual(["applied", "duplicate", "duplicate"]);
  await service.runtime.stop();
});
