/**
 * A crash after each storage call of the intake path in turn: the retry of the same request
 * (another instance, after the claim timeout) and a sweep must leave exactly one job with one
 * published outbox entry per runnable step, nothing lost, nothing duplicated.
 */
import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { ingestCommand, startTestRuntime } from "../../../dev/in-process-runtime.ts";
import { createRecordingPublisher } from "../../../dev/recording-publisher.ts";
import type { AzureTableOptions } from "../../../src/storage/azure/client.ts";
import { createMultiTableStore } from "../../../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../../../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../../../src/storage/job-store.ts";

type Backend = "table" | "ledger";

function makeStore(
  backend: Backend,
  connection: string,
  tables: ReturnType<typeof freshTables>,
  configureClient?: AzureTableOptions["configureClient"],
): JobStore {
  const options = { connection, tables, maxRetries: 0, ...(configureClient ? { configureClient } : {}) };
  return backend === "table" ? createMultiTableStore(options) : createSingleTableStore(options);
}

/** Lets the first `allowed` storage calls through once armed; every later one fails as if the process had died. */
function crashAfter(allowed: number) {
  let armed = false;
  let sent = 0;
  return {
    arm: () => {
      armed = true;
    },
    get sent() {
      return sent;
    },
    configureClient: ((client) =>
      client.pipeline.addPolicy({
        name: "crashAfter",
        sendRequest(request, next) {
          if (!armed) return next(request);
          if (++sent > allowed) return Promise.reject(Object.assign(new Error("simulated crash"), { code: "ECONNRESET" }));
          return next(request);
        },
      })) satisfies AzureTableOptions["configureClient"],
  };
}

const T0 = new Date("2026-03-01T10:00:00.000Z");
const later = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

async function intakeCalls(backend: Backend): Promise<number> {
  const { connection } = await azurite();
  const probe = crashAfter(Number.POSITIVE_INFINITY);
  const store = makeStore(backend, connection, freshTables(), probe.configureClient);
  const { postCommand } = await startTestRuntime({ store, now: () => T0 });
  probe.arm();
  expect((await postCommand(ingestCommand(), { "idempotency-key": "count" })).status).toBe(202);
  return probe.sent;
}

for (const backend of ["table", "ledger"] as const) {
  describe(`crash recovery: ${backend}`, () => {
    test("a crash after each intake storage call, then a retry and a sweep: one job, one entry, published", async () => {
      const { connection } = await azurite();
      const calls = await intakeCalls(backend);
      expect(calls).toBeGreaterThanOrEqual(backend === "ledger" ? 4 : 7);

      for (let allowed = 0; allowed <= calls; allowed++) {
        const tables = freshTables();
        const crash = crashAfter(allowed);
        const first = await startTestRuntime({ store: makeStore(backend, connection, tables, crash.configureClient), now: () => T0 });
        crash.arm();
        const firstStatus = (await first.postCommand(ingestCommand(), { "idempotency-key": "k-crash" })).status;
        expect(firstStatus).toBe(allowed >= calls ? 202 : 503);

        // Another instance, after the claim timeout, with a broker.
        const recording = createRecordingPublisher();
        let clock = later(60);
        const second = await startTestRuntime({ store: makeStore(backend, connection, tables), publisher: recording.publisher, now: () => clock });
        const retry = await second.postCommand(ingestCommand(), { "idempotency-key": "k-crash" });
        expect(retry.status).toBe(202);
        const { jobId } = (await retry.json()) as { jobId: string };
        await second.runtime.dispatcher!.drain();
        // The second instance's own sweep, an hour on: whatever is still pending is due.
        clock = later(3600);
        await second.runtime.sweeper!.tick();

        const listed = await second.runtime.store.listJobs("acme", { limit: 10, cursor: null });
        expect(listed.items.map((i) => i.jobId)).toEqual([jobId]);
        const stored = (await second.runtime.store.getJob(jobId))!;
        expect(stored.steps.map((s) => s.status)).toEqual(["initiated", "pending", "pending"]);
        expect(stored.outbox).toHaveLength(1);
        expect(stored.outbox[0]).toMatchObject({ status: "sent", stepId: stored.steps[0]!.stepId });
        expect(stored.job.status).toBe("in_progress");
        // Published at least once, only ever under the entry's id: the broker drops repeats.
        expect(recording.published.length).toBeGreaterThanOrEqual(1);
        expect(new Set(recording.published.map((p) => p.message.messageId))).toEqual(new Set([stored.outbox[0]!.outboxId]));
        expect(await second.runtime.store.findDueOutbox(later(7200), 100)).toEqual([]);
      }
    }, 120_000);

    test("two instances racing one Idempotency-Key create exactly one job", async () => {
      const { connection } = await azurite();
      const tables = freshTables();
      const a = await startTestRuntime({ store: makeStore(backend, connection, tables) });
      const b = await startTestRuntime({ store: makeStore(backend, connection, tables) });
      const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).postCommand(ingestCommand(), { "idempotency-key": "race" })));
      expect(responses.every((r) => r.status === 202 || r.status === 409)).toBe(true);
      const ids = new Set(await Promise.all(responses.filter((r) => r.status === 202).map(async (r) => ((await r.json()) as { jobId: string }).jobId)));
      expect(ids.size).toBe(1);
      expect((await a.runtime.store.listJobs("acme", { limit: 100, cursor: null })).items).toHaveLength(1);
    });

    test("storage down: 503 with Retry-After, no Azure text, and /readyz names storage", async () => {
      // A port nothing listens on.
      const server = Bun.serve({ port: 0, fetch: () => new Response() });
      const port = server.port;
      server.stop(true);
      const connection = (await azurite()).connection.replace(/:\d+\//, `:${port}/`);
      const store = makeStore(backend, connection, freshTables());
      const { postCommand, request } = await startTestRuntime({ store: { ...store, init: async () => {} } });
      const response = await postCommand(ingestCommand(), { "idempotency-key": "down" });
      expect(response.status).toBe(503);
      expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
      const body = await response.text();
      expect(body).toContain("storage-unavailable");
      expect(body).not.toMatch(/ECONNREFUSED|RestError|odata/i);
      const ready = await request("/readyz");
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { detail: string }).detail).toContain("storage");
    });
  });
}
