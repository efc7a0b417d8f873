/**
 * Maps on `table`, whose changes are written row after row: a change cut short between a child's
 * row and its map's row (a storage error, standing for a crash or a lost race) loses no count and
 * counts nothing twice. The child is counted late: by the repeat of its event, or, when none
 * comes, through its deadline marker. Children a change wrote before losing its race are not
 * published until their map's cursor covers them.
 */
import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { startTestRuntime } from "../../../dev/in-process-runtime.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { createRecordingPublisher } from "../../../dev/recording-publisher.ts";
import { loadSettings } from "../../../src/config/settings.ts";
import { childStepIdFor, stepIdFor } from "../../../src/domain/ids.ts";
import { createChildren } from "../../../src/domain/map-step.ts";
import type { MapDefinition } from "../../../src/domain/model.ts";
import { cancelStep, withdrawEntry } from "../../../src/domain/transitions.ts";
import { silentLogger } from "../../../src/logging/logger.ts";
import { createRuntime } from "../../../src/runtime.ts";
import type { AzureTableOptions } from "../../../src/storage/azure/client.ts";
import { createMultiTableStore } from "../../../src/storage/azure/multi-table-store.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../../support/test-files.ts";

const dir = tempDir("map-cut-short");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const MAP: MapDefinition = { items: "/results/split/pages", maxConcurrency: 2, maxItems: 1000, toleratedFailurePercent: 0 };
const { protocols } = writeProtocols(dir, [
  {
    requestType: "document.pages",
    version: 1,
    steps: [
      { name: "split", topic: "split", payloadSchema: { type: "object" }, after: [] },
      { name: "ocr", topic: "ocr", payloadSchema: { type: "object" }, timeoutSeconds: 60, map: MAP },
      { name: "merge", topic: "merge", payloadSchema: { type: "object" } },
    ],
  },
]);

/** Fails, once armed, every write of the row named by `rowKeyPart`: what a crash between two writes leaves. */
function failingWrites() {
  let failing: string | null = null;
  return {
    failWritesOf(rowKeyPart: string | null) {
      failing = rowKeyPart;
    },
    configureClient: ((client) =>
      client.pipeline.addPolicy({
        name: "failWrites",
        sendRequest(request, next) {
          const url = decodeURIComponent(request.url);
          if (failing !== null && request.method !== "GET" && url.includes(failing)) {
            return Promise.reject(Object.assign(new Error("simulated crash"), { code: "ECONNRESET" }));
          }
          return next(request);
        },
      })) satisfies AzureTableOptions["configureClient"],
  };
}

async function setup() {
  const { connection } = await azurite();
  const faults = failingWrites();
  const store = createMultiTableStore({ connection, tables: freshTables(), maxRetries: 0, configureClient: faults.configureClient });
  await store.init();
  let clock = Date.now();
  const recording = createRecordingPublisher();
  const service = await startTestRuntime({ store, protocols, publisher: recording.publisher, now: () => new Date(clock) });
  cleanups.push(() => service.runtime.stop());
  const messages = (topic: string) => recording.published.filter((p) => p.topic === topic).map((p) => p.message.body);
  const report = async (jobId: string, stepId: string, eventId: string, event: Record<string, unknown>) => {
    const response = await service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId, ...event }),
    });
    return { status: response.status, body: (await response.json()) as { outcome?: string } };
  };
  const mapCounts = async (jobId: string) =>
    ((await (await service.request(`/v1/jobs/${jobId}`)).json()) as { steps: { name: string; map?: Record<string, number> }[] }).steps.find(
      (s) => s.name === "ocr",
    )!.map;
  /** A job whose split succeeded with two pages: both children dispatched. */
  const started = async () => {
    const response = await service.postCommand({ requestType: "document.pages", tenantId: "acme", payload: { documentId: "d1" } });
    const { jobId } = (await response.json()) as { jobId: string };
    await service.runtime.dispatcher!.drain();
    await report(jobId, stepIdFor(jobId, 0), "split-done", { status: "succeeded", result: { pages: ["p1", "p2"] } });
    await service.runtime.dispatcher!.drain();
    return jobId;
  };
  /**
   * What a writer that lost the race for the map's row leaves behind: a third child (item 2), its
   * row and directive written (created `at`), and no cursor over it. Returns the change, unsaved.
   */
  const lostChild = async (jobId: string, at: Date) => {
    const aggregate = (await store.getJob(jobId))!;
    const map = aggregate.steps[1]!;
    const lost = createChildren(
      { ...map, map: { ...map.map!, total: 3, running: 0 } },
      { ...protocols.get("document.pages")!.steps[1]!, map: { ...MAP, maxConcurrency: 3 } },
      ["p1", "p2", "p3"],
      3,
      { job: aggregate.job, results: {}, traceparent: null, now: at, retryDelaySeconds: 0 },
    );
    expect(lost.children.map((c) => c.itemIndex)).toEqual([2]);
    return { steps: lost.children, outbox: lost.outbox };
  };
  return { service, store, faults, messages, report, mapCounts, started, lostChild, advance: (seconds: number) => (clock += seconds * 1000) };
}

describe("maps on table: a change cut short between a child's row and its map's", () => {
  test("the repeat of the child's event counts it, once; the map then ends and its successor runs", async () => {
    const { faults, messages, report, mapCounts, started, service } = await setup();
    const jobId = await started();
    const first = childStepIdFor(jobId, 1, 0);
    // The child's row is written, its map's is not.
    faults.failWritesOf(`_${stepIdFor(jobId, 1)}'`);
    expect((await report(jobId, first, "p1-done", { status: "succeeded", result: { text: "one" } })).status).toBe(503);
    faults.failWritesOf(null);
    expect(await mapCounts(jobId)).toMatchObject({ running: 2, succeeded: 0 });
    // The worker sends the event again: counted now, and a third repeat changes nothing.
    expect((await report(jobId, first, "p1-done", { status: "succeeded", result: { text: "one" } })).body.outcome).toBe("applied");
    expect(await mapCounts(jobId)).toMatchObject({ running: 1, succeeded: 1 });
    expect((await report(jobId, first, "p1-done", { status: "succeeded", result: { text: "one" } })).body.outcome).toBe("duplicate");
    expect(await mapCounts(jobId)).toMatchObject({ running: 1, succeeded: 1 });
    await report(jobId, childStepIdFor(jobId, 1, 1), "p2-done", { status: "succeeded", result: { text: "two" } });
    await service.runtime.dispatcher!.drain();
    expect(messages("merge").map((m) => m.results.ocr)).toEqual([{ items: [{ text: "one" }, { text: "two" }], failed: [] }]);
  });

  test("with no repeat, the child's deadline marker brings it to be counted: the map ends, its successor runs, the marker goes", async () => {
    const { faults, report, started, store, service, messages, advance } = await setup();
    const jobId = await started();
    await report(jobId, childStepIdFor(jobId, 1, 1), "p2-done", { status: "succeeded", result: { text: "two" } });
    faults.failWritesOf(`_${stepIdFor(jobId, 1)}'`);
    expect((await report(jobId, childStepIdFor(jobId, 1, 0), "p1-done", { status: "succeeded", result: { text: "one" } })).status).toBe(503);
    faults.failWritesOf(null);
    const afterDeadline = new Date(advance(61));
    expect((await store.findExpiredSteps(afterDeadline, 10)).map((e) => e.stepId)).toEqual([childStepIdFor(jobId, 1, 0)]);
    await service.runtime.deadlines.tick();
    await service.runtime.dispatcher!.drain();
    expect(messages("merge").map((m) => m.results.ocr)).toEqual([{ items: [{ text: "one" }, { text: "two" }], failed: [] }]);
    expect(await store.findExpiredSteps(afterDeadline, 10)).toEqual([]);
  });

  test("children a change wrote before losing its race are not published until their map's cursor covers them", async () => {
    const { store, started, service, messages, lostChild } = await setup();
    const jobId = await started();
    await store.saveChanges(jobId, await lostChild(jobId, new Date(Date.now() - 60_000)));
    const due = await store.findDueOutbox(new Date(Date.now() + 3_600_000), 100);
    expect(due.map((work) => work.entry.stepId)).not.toContain(childStepIdFor(jobId, 1, 2));
    await service.runtime.sweeper?.tick();
    expect(messages("ocr").map((m) => m.itemIndex)).toEqual([0, 1]);
  });

  test("a child left uncounted when its job failed is counted by the redrive: the map ends and its successor runs", async () => {
    const { faults, report, started, store, service, messages } = await setup();
    const jobId = await started();
    faults.failWritesOf(`_${stepIdFor(jobId, 1)}'`);
    expect((await report(jobId, childStepIdFor(jobId, 1, 0), "p1-done", { status: "succeeded", result: { text: "one" } })).status).toBe(503);
    faults.failWritesOf(null);
    // The other child fails the map (no failure tolerated) before the first is counted.
    await report(jobId, childStepIdFor(jobId, 1, 1), "p2-failed", { status: "failed", error: { code: "unreadable", message: "no text" } });
    expect((await store.getJob(jobId))!.job.status).toBe("failed");
    expect((await service.request(`/v1/jobs/${jobId}/redrive`, { method: "POST" })).status).toBe(200);
    await service.runtime.dispatcher!.drain();
    const [rerun] = (await store.getChildren(jobId, [childStepIdFor(jobId, 1, 1)])).steps;
    expect(rerun?.status).not.toBe("succeeded");
    await report(jobId, childStepIdFor(jobId, 1, 1), "p2-done", { status: "succeeded", result: { text: "two" }, attempt: rerun!.attempts });
    await service.runtime.dispatcher!.drain();
    expect(messages("merge").map((m) => m.results.ocr)).toEqual([{ items: [{ text: "one" }, { text: "two" }], failed: [] }]);
  });

  test("directives of children past the cursor never take a sweep's places: a drain publishes every covered entry", async () => {
    const { store, started, lostChild } = await setup();
    const jobId = await started();
    // Due before everything else.
    await store.saveChanges(jobId, await lostChild(jobId, new Date(Date.now() - 3_600_000)));
    for (let i = 0; i < 8; i++) await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
    const recording = createRecordingPublisher();
    const runtime = await createRuntime({
      settings: loadSettings({ LUCIUS_OUTBOX_RETRY_BATCH_SIZE: "2" }),
      protocols,
      logger: silentLogger,
      store,
      publisher: recording.publisher,
    });
    cleanups.push(() => runtime.stop());
    expect(await runtime.sweeper!.drainAll()).toMatchObject({ sent: 8 });
    expect(recording.published.map((p) => p.message.body.stepId)).not.toContain(childStepIdFor(jobId, 1, 2));
  });

  test("a child a job's closing cancelled before its map reached it is written afresh by the change that covers it", async () => {
    const { store, started, lostChild } = await setup();
    const jobId = await started();
    const lost = await lostChild(jobId, new Date());
    // Written by a change that lost its race, then closed with its job.
    const orphan = await store.saveChanges(jobId, lost);
    const at = new Date().toISOString();
    await store.saveChanges(jobId, {
      steps: orphan.steps.map((child) => cancelStep(child, at)),
      outbox: orphan.outbox.map((entry) => withdrawEntry(entry, "job ended before this directive was sent", at)),
    });
    // After a redrive, the change that covers it writes it again.
    await store.saveChanges(jobId, lost);
    const stored = await store.getChildren(jobId, [childStepIdFor(jobId, 1, 2)]);
    expect(stored.steps.map((c) => c.status)).toEqual(["pending"]);
    expect(stored.outbox.map((o) => o.status)).toEqual(["pending"]);
  });
});
