/**
 * Bulk redrive: an operator's filter redrives every failed job it matches, once, in the
 * background, at a bounded rate; with two replicas on `ledger` and the one working it killed
 * (SIGKILL) mid-way, the other finishes it and still no job is redriven twice.
 */
import { describe, expect, test } from "bun:test";
import { acceptedBody } from "../../dev/dev-broker.ts";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import type { BulkOperation } from "../../src/domain/bulk.ts";
import { failJob } from "../../src/domain/fail-fast.ts";
import { newJobId } from "../../src/domain/ids.ts";
import type { JobAggregate, Protocol } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { failStep } from "../../src/domain/transitions.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";
import { startService } from "../support/service-process.ts";
import { sharedLedger } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("bulk");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const { protocolsFile, protocols } = writeProtocols(dir, [
  {
    requestType: "document.bulk",
    version: 1,
    steps: ["ocr", "store"].map((name) => ({ name, topic: `bulk-${name}`, payloadSchema: { type: "object" } })),
  },
]);
const protocol: Protocol = protocols.get("document.bulk")!;
const TOPICS = { "bulk-ocr": ["workers"], "bulk-store": ["workers"] };
const ADMIN_KEY = "admin-key-for-the-bulk-redrive-tests-0123456789";

/** A job whose first step failed for good with `code` (never published: its directive withdrawn). */
function failedJob(tenantId: string, code: string, at: Date): JobAggregate {
  const planned = planJob({
    jobId: newJobId(),
    command: { requestType: "document.bulk", tenantId, correlationId: null, idempotencyKey: null, payload: { n: 1 } },
    protocol,
    traceparent: null,
    now: at,
    retryDelaySeconds: 30,
  });
  const failed = failJob(planned, failStep({ ...planned.steps[0]!, status: "initiated" }, { code, message: "down", retryable: false }, at.toISOString()), {
    protocol,
    now: at,
    retryDelaySeconds: 30,
  });
  return {
    job: failed.job,
    steps: planned.steps.map((s) => failed.steps.find((f) => f.stepId === s.stepId) ?? s),
    outbox: failed.outbox,
  };
}

async function storeFailed(store: JobStore, count: number, code: string, tenantId = "acme"): Promise<string[]> {
  const at = new Date(Date.now() - 60_000);
  const jobs = Array.from({ length: count }, () => failedJob(tenantId, code, at));
  for (let i = 0; i < jobs.length; i += 20) await Promise.all(jobs.slice(i, i + 20).map((job) => store.createJob(job, null)));
  return jobs.map((j) => j.job.jobId);
}

const ocrMessagesByJob = (bus: Awaited<ReturnType<typeof startBroker>>) => {
  const counts = new Map<string, number>();
  for (const message of bus.broker.accepted("bulk-ocr")) {
    const { jobId } = acceptedBody<{ jobId: string }>(message);
    counts.set(jobId, (counts.get(jobId) ?? 0) + 1);
  }
  return counts;
};

describe("bulk redrive", () => {
  test("of 200 failed jobs and 20 others, the filter's 200 are redriven once each; the same Idempotency-Key answers the same operation", async () => {
    const bus = await startBroker({ topics: TOPICS });
    cleanups.push(() => bus.stop());
    const store = createMemoryStore();
    const matching = await storeFailed(store, 200, "ocr-down");
    const others = await storeFailed(store, 20, "bad-input");
    const service = await startTestRuntime({
      store,
      protocols,
      publisherFromSettings: true,
      env: {
        LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
        LUCIUS_ADMIN_ENABLED: "true",
        LUCIUS_ADMIN_API_KEY: ADMIN_KEY,
        LUCIUS_BULK_REDRIVE_RATE: "1000",
        LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
      },
    });
    service.runtime.start();
    cleanups.push(() => service.runtime.stop());
    const admin = { "x-api-key": ADMIN_KEY, "content-type": "application/json" };
    const start = () =>
      service.request("/v1/admin/jobs/redrive", {
        method: "POST",
        headers: { ...admin, "idempotency-key": "after-the-ocr-outage" },
        body: JSON.stringify({ status: "failed", errorCode: "ocr-down", tenantId: "acme" }),
      });
    const response = await start();
    expect(response.status).toBe(202);
    const { operationId } = (await response.json()) as BulkOperation;
    expect(response.headers.get("location")).toBe(`/v1/admin/operations/${operationId}`);
    expect(((await (await start()).json()) as BulkOperation).operationId).toBe(operationId);
    const otherFilter = await service.request("/v1/admin/jobs/redrive", {
      method: "POST",
      headers: { ...admin, "idempotency-key": "after-the-ocr-outage" },
      body: JSON.stringify({ status: "cancelled" }),
    });
    expect(otherFilter.status).toBe(422);

    const read = async () => (await (await service.request(`/v1/admin/operations/${operationId}`, { headers: admin })).json()) as BulkOperation;
    await eventually(async () => (await read()).status === "succeeded", { timeoutMs: 15_000, what: "the operation finished" });
    expect(await read()).toMatchObject({ status: "succeeded", matched: 200, redriven: 200, skipped: 0, lease: null });
    await eventually(() => ocrMessagesByJob(bus).size >= 200, { timeoutMs: 10_000, what: "200 redriven steps published" });
    const counts = ocrMessagesByJob(bus);
    expect(matching.every((jobId) => counts.get(jobId) === 1)).toBe(true);
    expect(others.some((jobId) => counts.has(jobId))).toBe(false);
    const job = (await store.getJob(matching[0]!))!;
    expect(job.job).toMatchObject({ status: "in_progress", redrives: 1, redrivenBy: operationId });
    const history = await store.getHistory(matching[0]!, 0, 10);
    expect(history.at(-1)).toMatchObject({ action: "redrive", actor: "admin-key", detail: { operation: operationId } });
  }, 30_000);

  test("ledger, two replicas: the one working the operation is killed mid-way; the other finishes it and no job is redriven twice", async () => {
    const bus = await startBroker({ topics: TOPICS });
    cleanups.push(() => bus.stop());
    const ledger = await sharedLedger();
    const { store } = ledger;
    await store.init();
    const jobIds = await storeFailed(store, 200, "ocr-down");
    const env = {
      ...ledger.env,
      LUCIUS_PROTOCOLS_FILE: protocolsFile,
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_ADMIN_ENABLED: "true",
      LUCIUS_ADMIN_API_KEY: ADMIN_KEY,
      LUCIUS_BULK_REDRIVE_RATE: "40",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
      LUCIUS_OUTBOX_RETRY_DELAY: "1",
      LUCIUS_LOG_LEVEL: "info",
    };
    const replicas = await Promise.all([startService(env), startService(env)]);
    cleanups.push(async () => {
      for (const replica of replicas) if (replica.proc.exitCode === null) replica.proc.kill("SIGKILL");
    });
    const admin = { "x-api-key": ADMIN_KEY, "content-type": "application/json" };
    const response = await fetch(new URL("/v1/admin/jobs/redrive", replicas[0]!.url), {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ status: "failed" }),
    });
    expect(response.status).toBe(202);
    const { operationId } = (await response.json()) as BulkOperation;
    const read = async (replica: (typeof replicas)[number]) =>
      (await (await fetch(new URL(`/v1/admin/operations/${operationId}`, replica.url), { headers: admin })).json()) as BulkOperation;

    // Mid-way: some redriven, most not; kill whichever replica holds the lease.
    await eventually(async () => (await read(replicas[0]!)).redriven >= 40, { timeoutMs: 15_000, what: "40 jobs redriven" });
    const owner = (await read(replicas[0]!)).lease!.owner;
    const working = replicas.findIndex((r) => r.logs.some((line) => line.operationId === operationId && line.owner === owner));
    expect(working).toBeGreaterThanOrEqual(0);
    replicas[working]!.proc.kill("SIGKILL");
    await replicas[working]!.proc.exited;
    const survivor = replicas[1 - working]!;
    expect((await read(survivor)).status).toBe("running");

    await eventually(async () => (await read(survivor)).status === "succeeded", { timeoutMs: 20_000, what: "the survivor finished the operation" });
    const finished = await read(survivor);
    expect(finished.matched).toBe(200);
    expect(finished.redriven + (finished.skippedReasons["redriven by this operation already"] ?? 0)).toBe(200);
    expect(finished.skipped).toBe(finished.skippedReasons["redriven by this operation already"] ?? 0);
    // Every job once: one redrive each, one message each (a repeated publish keeps its messageId, and the broker keeps one).
    // The dead replica's leases run out first; on a loaded two-core runner that took over 15 s.
    await eventually(() => ocrMessagesByJob(bus).size >= 200, { timeoutMs: 30_000, what: "200 redriven steps published" });
    const counts = ocrMessagesByJob(bus);
    expect(jobIds.filter((jobId) => counts.get(jobId) !== 1)).toEqual([]);
    const redrives = await Promise.all(jobIds.map(async (jobId) => (await store.getJob(jobId))!.job.redrives));
    expect(redrives.filter((n) => n !== 1)).toEqual([]);
  }, 60_000);
});
