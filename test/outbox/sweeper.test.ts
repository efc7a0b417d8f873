/**
 * The retry loop with the real SDK and the dev broker, on every backend: nothing accepted is
 * lost, nothing is published by two sweepers at once.
 */
import { afterEach, describe, expect, jest, test } from "bun:test";
import { azurite, freshTables } from "../../dev/azurite.ts";
import { deferred, eventually } from "../../dev/eventually.ts";
import { ingestCommand } from "../../dev/in-process-runtime.ts";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { overlappingPublishes, type TimedPublish, timedPublisher } from "../../dev/recording-publisher.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { bundledRegistry } from "../../src/config/protocols.ts";
import { loadSettings } from "../../src/config/settings.ts";
import type { OutboxEntry } from "../../src/domain/model.ts";
import { leaseEntry } from "../../src/domain/transitions.ts";
import { silentLogger } from "../../src/logging/logger.ts";
import { PublishError, type Publisher } from "../../src/outbox/publisher.ts";
import { createServiceBusPublisher } from "../../src/outbox/service-bus-publisher.ts";
import { createRuntime, type Runtime } from "../../src/runtime.ts";
import { createMultiTableStore } from "../../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

type Backend = "memory" | "table" | "ledger";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** A store factory: each call is another instance (another replica) on the same data. */
async function storesFor(backend: Backend): Promise<() => JobStore> {
  if (backend === "memory") {
    const shared = createMemoryStore();
    return () => shared;
  }
  const { connection } = await azurite();
  const tables = freshTables();
  const first = backend === "table" ? createMultiTableStore({ connection, tables }) : createSingleTableStore({ connection, tables });
  await first.init();
  let made = 0;
  return () => (made++ === 0 ? first : backend === "table" ? createMultiTableStore({ connection, tables }) : createSingleTableStore({ connection, tables }));
}

const FAST_RETRY = {
  LUCIUS_OUTBOX_RETRY_DELAY: "0.2",
  LUCIUS_OUTBOX_RETRY_INTERVAL: "0.05",
  LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "0.3",
};
/**
 * The fast path publishes only entries that fall due after its publish timeout (and after the
 * intake's own storage time): tests of the fast path need a delay well above the timeout.
 */
const WITH_FAST_PATH = { LUCIUS_OUTBOX_RETRY_DELAY: "0.7" };

async function instance(
  store: JobStore,
  publisher: Publisher,
  env: Record<string, string> = {},
  now?: () => Date,
): Promise<Runtime & { post(body: unknown): Promise<Response> }> {
  const runtime = await createRuntime({
    settings: loadSettings({ ...FAST_RETRY, ...env }),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store,
    publisher,
    ...(now ? { now } : {}),
  });
  cleanups.push(() => runtime.stop());
  return Object.assign(runtime, {
    post: (body: unknown) => runtime.app.handle(new Request("http://localhost/v1/commands", { method: "POST", body: JSON.stringify(body) })),
  });
}

function realPublisher(connectionString: string) {
  const publisher = createServiceBusPublisher({ connectionString, readinessTopic: "ocr-requests", logger: silentLogger });
  return publisher;
}

async function entryOf(store: JobStore, jobId: string): Promise<OutboxEntry> {
  return (await store.getJob(jobId))!.outbox[0]!;
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`retry loop: ${backend}`, () => {
    test("broker down while commands are accepted: all 202; broker back: the sweeper delivers each once", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const store = (await storesFor(backend))();
      const service = await instance(store, realPublisher(bus.broker.connectionString), WITH_FAST_PATH);
      await bus.broker.refuseConnections(true);
      const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => service.post(ingestCommand({ correlationId: `c-${i}` }))));
      expect(responses.map((r) => r.status)).toEqual(Array(20).fill(202));
      const jobIds = await Promise.all(responses.map(async (r) => ((await r.json()) as { jobId: string }).jobId));
      await service.dispatcher!.drain();
      // The fast path tried, failed, and left the rest of its queue to the sweeper.
      const waiting = await Promise.all(jobIds.map((jobId) => entryOf(store, jobId)));
      expect(waiting.every((entry) => entry.status === "pending" && entry.attempts <= 1)).toBe(true);
      expect(waiting.some((entry) => entry.attempts === 1)).toBe(true);

      await bus.broker.refuseConnections(false);
      service.start();
      await eventually(async () => (await Promise.all(jobIds.map((id) => entryOf(store, id)))).every((e) => e.status === "sent"), {
        timeoutMs: 20_000,
        what: "every entry sent",
      });
      const received = await bus.receive("ocr-requests", 20, { timeoutMs: 5000 });
      expect(new Set(received.map((m) => m.messageId)).size).toBe(20);
      expect(received).toHaveLength(20);
    }, 60_000);

    test("a publish stalled beyond the timeout is retried, not stuck", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const store = (await storesFor(backend))();
      const service = await instance(store, realPublisher(bus.broker.connectionString), WITH_FAST_PATH);
      bus.broker.stallSends(true);
      const { jobId } = (await (await service.post(ingestCommand())).json()) as { jobId: string };
      await eventually(async () => (await entryOf(store, jobId)).attempts === 1, { what: "the stalled attempt recorded" });
      bus.broker.stallSends(false);
      service.start();
      await eventually(async () => (await entryOf(store, jobId)).status === "sent", { timeoutMs: 20_000, what: "the entry sent" });
      expect((await bus.receive("ocr-requests", 1))[0]?.messageId).toBe((await entryOf(store, jobId)).outboxId);
    }, 60_000);

    test("an entry that keeps failing while the broker answers is failed after exactly MAX_ATTEMPTS; an admin retry then delivers it", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const store = (await storesFor(backend))();
      // The namespace answers (readiness, probes) but this topic keeps refusing, as a busy entity does.
      const real = realPublisher(bus.broker.connectionString);
      let refusing = true;
      const busyTopic: Publisher = {
        publish: (topic, messages, signal) =>
          refusing ? Promise.reject(new PublishError("ServerBusy: the entity is busy", true)) : real.publish(topic, messages, signal),
        check: () => real.check(),
        close: () => real.close(),
      };
      const service = await instance(store, busyTopic, {
        LUCIUS_OUTBOX_MAX_ATTEMPTS: "3",
        LUCIUS_ADMIN_ENABLED: "true",
        LUCIUS_ADMIN_API_KEY: "admin-key-0123456789",
      });
      const { jobId } = (await (await service.post(ingestCommand())).json()) as { jobId: string };
      service.start();
      const failed = await eventually(
        async () => {
          const entry = await entryOf(store, jobId);
          return entry.status === "failed" && entry;
        },
        { timeoutMs: 20_000, what: "the entry failed" },
      );
      expect(failed.attempts).toBe(3);
      expect(failed.lastError).toContain("ServerBusy");
      refusing = false;
      const retry = await service.app.handle(
        new Request(`http://localhost/v1/admin/outbox/${failed.outboxId}/retry`, { method: "POST", headers: { "x-api-key": "admin-key-0123456789" } }),
      );
      expect(await retry.json()).toEqual({ outboxId: failed.outboxId, status: "sent" });
      expect((await bus.receive("ocr-requests", 1))[0]?.messageId).toBe(failed.outboxId);
    }, 60_000);

    test("a broker outage does not spend the attempts of waiting entries; once it is back they all go out", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const store = (await storesFor(backend))();
      const service = await instance(store, realPublisher(bus.broker.connectionString), { LUCIUS_OUTBOX_MAX_ATTEMPTS: "2" });
      await bus.broker.refuseConnections(true);
      const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => service.post(ingestCommand({ correlationId: `o-${i}` }))));
      const jobIds = await Promise.all(responses.map(async (r) => ((await r.json()) as { jobId: string }).jobId));
      service.start();
      // Long enough for every entry to fall due and for ten sweep intervals: without the probe, the
      // sweeper would spend both attempts of each entry and park them all as failed.
      await eventually(() => service.dispatcher!.broker.isDown(), { timeoutMs: 10_000, what: "the broker seen down" });
      await eventually(
        async () => (await Promise.all(jobIds.map((id) => entryOf(store, id)))).every((e) => e.nextAttemptAt! < new Date(Date.now() - 500).toISOString()),
        {
          timeoutMs: 15_000,
          intervalMs: 100,
          what: "every entry due for half a second (ten sweep intervals)",
        },
      );
      const waiting = await Promise.all(jobIds.map((id) => entryOf(store, id)));
      expect(waiting.every((e) => e.status === "pending" && e.attempts <= 1)).toBe(true);
      await bus.broker.refuseConnections(false);
      await eventually(async () => (await Promise.all(jobIds.map((id) => entryOf(store, id)))).every((e) => e.status === "sent"), {
        timeoutMs: 20_000,
        what: "every entry sent",
      });
      expect(new Set((await bus.receive("ocr-requests", 20, { timeoutMs: 5000 })).map((m) => m.messageId)).size).toBe(20);
    }, 60_000);

    test("an instance killed mid-lease: another picks the entry up once the lease has run out", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const stores = await storesFor(backend);
      const store = stores();
      const planned = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
      // Instance A leases the entry, then hangs in its publish: as good as dead.
      const hung = deferred();
      const publishing = deferred();
      const hanging: Publisher = {
        publish: async (_topic, messages) => {
          publishing.resolve();
          await hung.promise;
          return messages.map(() => ({ ok: false as const, error: "killed", retryable: true }));
        },
        check: async () => {},
        close: async () => {},
      };
      const a = await instance(store, hanging, { LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "100" });
      const aTick = a.sweeper!.tick();
      // A publishes only what it leased (the entry itself, or on ledger its due marker).
      await publishing.promise;
      // B, on another instance: nothing is due until the lease runs out.
      const later = { at: new Date() };
      const b = await instance(stores(), realPublisher(bus.broker.connectionString), {}, () => later.at);
      expect((await b.sweeper!.tick()).attempted).toBe(0);
      later.at = new Date(Date.now() + 601_000);
      expect(await b.sweeper!.tick()).toEqual({ attempted: 1, sent: 1, failed: 0 });
      expect((await entryOf(store, planned.job.jobId)).status).toBe("sent");
      // A wakes up: its outcome loses against B's, the entry stays sent.
      hung.resolve();
      await aTick;
      expect((await entryOf(store, planned.job.jobId)).status).toBe("sent");
      // What the broker took, not a receive that waits out its deadline for a second message.
      expect(bus.broker.accepted("ocr-requests").map((m) => m.message_id)).toEqual([planned.outbox[0]!.outboxId]);
    }, 60_000);

    test("three sweepers on one store and one broker drain 100 entries, none published by two at once", async () => {
      const bus = await startBroker();
      cleanups.push(() => bus.stop());
      const stores = await storesFor(backend);
      const seed = stores();
      const jobIds: string[] = [];
      const batch = await Promise.all(Array.from({ length: 100 }, () => storeJob(seed, sampleJob("acme", { retryDelaySeconds: 0 }))));
      jobIds.push(...batch.map((j) => j.job.jobId));
      const publishes: TimedPublish[] = [];
      const sweepers = await Promise.all(
        [0, 1, 2].map(async (n) =>
          instance(n === 0 ? seed : stores(), timedPublisher(n, realPublisher(bus.broker.connectionString), publishes), {
            // Small batches: each sweeper needs several sweeps, so the three meet over the same entries.
            LUCIUS_OUTBOX_RETRY_BATCH_SIZE: "10",
            LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "2",
          }),
        ),
      );
      for (const s of sweepers) s.start();
      await eventually(async () => (await seed.outboxStats(new Date())).pending === 0, { timeoutMs: 60_000, intervalMs: 250, what: "nothing pending" });
      for (const s of sweepers) await s.sweeper!.stop();

      const entries = await Promise.all(jobIds.map((id) => entryOf(seed, id)));
      expect(entries.every((e) => e.status === "sent")).toBe(true);
      expect(new Set(publishes.map((p) => p.messageId)).size).toBe(100);
      expect(overlappingPublishes(publishes)).toBe(0);
      const accepted = bus.broker.accepted("ocr-requests");
      expect(new Set(accepted.map((m) => m.message_id)).size).toBe(100);
    }, 60_000);
  });
}

test("a sweeper's ticks never overlap, and stop() waits for the running one", async () => {
  const store = createMemoryStore();
  await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  let sweeps = 0;
  const gate = deferred();
  const slow: JobStore = {
    ...store,
    async findDueOutbox(now, limit) {
      sweeps++;
      await gate.promise;
      return store.findDueOutbox(now, limit);
    },
  };
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  const runtime = await createRuntime({
    settings: loadSettings({ LUCIUS_OUTBOX_RETRY_INTERVAL: "0.05" }),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store: slow,
    publisher: recording.publisher,
  });
  // The interval is driven by hand: what happens in 50 ms steps, without waiting for them.
  jest.useFakeTimers();
  let stopping: Promise<unknown>;
  let stopped = false;
  try {
    runtime.start();
    jest.advanceTimersByTime(50);
    expect(sweeps).toBe(1);
    jest.advanceTimersByTime(200); // four more intervals while the first sweep still runs
    expect(sweeps).toBe(1);
    stopping = runtime.stop().then(() => {
      stopped = true;
    });
  } finally {
    jest.useRealTimers();
  }
  // Every pending callback and promise job runs before setImmediate's: stop() is still waiting.
  await new Promise((resolve) => setImmediate(resolve));
  expect(stopped).toBe(false);
  gate.resolve();
  await stopping;
  expect(stopped).toBe(true);
  expect(sweeps).toBe(1);
  expect(recording.published).toHaveLength(1);
});

test("a lease written but answered with a conflict (a lost answer, then a retry) is still taken as ours", async () => {
  const store = createMemoryStore();
  const planned = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  let first = true;
  const ambiguous: JobStore = {
    ...store,
    async saveChanges(jobId, changes) {
      const saved = await store.saveChanges(jobId, changes);
      if (first) {
        first = false;
        const { ConcurrencyConflictError } = await import("../../src/domain/errors.ts");
        throw new ConcurrencyConflictError("the retry of a write that had landed");
      }
      return saved;
    },
  };
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  const runtime = await createRuntime({
    settings: loadSettings({}),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store: ambiguous,
    publisher: recording.publisher,
  });
  cleanups.push(() => runtime.stop());
  expect(await runtime.sweeper!.tick()).toEqual({ attempted: 1, sent: 1, failed: 0 });
  expect((await store.getJob(planned.job.jobId))!.outbox[0]!.status).toBe("sent");
});

test("a drain of everything never takes an entry another sweeper holds under a lease", async () => {
  const store = createMemoryStore();
  const held = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  const free = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  const until = new Date(Date.now() + 60_000).toISOString();
  await store.saveChanges(held.job.jobId, { outbox: [leaseEntry(held.outbox[0]!, new Date().toISOString(), until, "another-replica")] });
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  const runtime = await createRuntime({
    settings: loadSettings({}),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store,
    publisher: recording.publisher,
  });
  cleanups.push(() => runtime.stop());
  expect(await runtime.sweeper!.drainAll()).toEqual({ attempted: 1, sent: 1, failed: 0 });
  expect(recording.published.map((p) => p.message.messageId)).toEqual([free.outbox[0]!.outboxId]);
  expect((await entryOf(store, held.job.jobId)).status).toBe("pending");
});

test("the sweeper wakes when a directive it was told of falls due, not at the end of its interval", async () => {
  const store = createMemoryStore();
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  const runtime = await createRuntime({
    // An interval far beyond the test's deadline: only the announced due time can wake the sweeper.
    settings: loadSettings({ LUCIUS_OUTBOX_RETRY_INTERVAL: "600", LUCIUS_OUTBOX_RETRY_DELAY: "0.6", LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "0.5" }),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store,
    publisher: recording.publisher,
  });
  cleanups.push(() => runtime.stop());
  runtime.start(); // its first sweep finds nothing and pauses for the interval
  recording.rejectWhen(() => ({ ok: false, error: "ServerBusy", retryable: true }));
  const accepted = await runtime.app.handle(new Request("http://localhost/v1/commands", { method: "POST", body: JSON.stringify(ingestCommand()) }));
  const { jobId } = (await accepted.json()) as { jobId: string };
  await runtime.dispatcher!.drain();
  expect((await entryOf(store, jobId)).attempts).toBe(1);
  recording.rejectWhen(() => null);
  await eventually(async () => (await entryOf(store, jobId)).status === "sent", { timeoutMs: 5000, what: "the retry sent before the interval ends" });
});

/** A runtime on `store` that sweeps two entries a batch, stopped after the test. */
async function smallBatchRuntime(store: JobStore, publisher: Publisher): Promise<Runtime> {
  const runtime = await createRuntime({
    settings: loadSettings({ LUCIUS_OUTBOX_RETRY_BATCH_SIZE: "2" }),
    protocols: bundledRegistry(),
    logger: silentLogger,
    store,
    publisher,
  });
  cleanups.push(() => runtime.stop());
  return runtime;
}

test("a drain of everything looks past a full window of entries held by leases to the ones behind them", async () => {
  const store = createMemoryStore();
  const until = new Date(Date.now() + 60_000).toISOString();
  const held = [];
  for (let i = 0; i < 2; i++) {
    const stored = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
    await store.saveChanges(stored.job.jobId, { outbox: [leaseEntry(stored.outbox[0]!, new Date().toISOString(), until, "another-replica")] });
    held.push(stored);
  }
  // Backing off beyond the leases' end: it sorts after the held ones.
  const behind = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  const later = new Date(Date.now() + 120_000).toISOString();
  await store.saveChanges(behind.job.jobId, { outbox: [{ ...behind.outbox[0]!, nextAttemptAt: later }] });
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  const runtime = await smallBatchRuntime(store, recording.publisher);
  expect(await runtime.sweeper!.drainAll()).toEqual({ attempted: 1, sent: 1, failed: 0 });
  expect(recording.published.map((p) => p.message.messageId)).toEqual([behind.outbox[0]!.outboxId]);
  for (const stored of held) expect((await entryOf(store, stored.job.jobId)).status).toBe("pending");
});

test("a drain does not read again the entries its batches in flight are publishing", async () => {
  const inner = createMemoryStore();
  for (let i = 0; i < 6; i++) await storeJob(inner, sampleJob("acme", { retryDelaySeconds: 0 }));
  const found = new Map<string, number>();
  const store: JobStore = {
    ...inner,
    findDueOutbox: async (now, limit, options) => {
      const work = await inner.findDueOutbox(now, limit, options);
      for (const { entry } of work) found.set(entry.outboxId, (found.get(entry.outboxId) ?? 0) + 1);
      return work;
    },
  };
  const recording = (await import("../../dev/recording-publisher.ts")).createRecordingPublisher();
  // Every batch waits until all three are in flight: the drain sweeps on while they publish.
  const release = recording.stall();
  const runtime = await smallBatchRuntime(store, recording.publisher);
  const drained = runtime.sweeper!.drainAll();
  await eventually(() => found.size === 6, { timeoutMs: 5_000, what: "every entry found" });
  release();
  expect(await drained).toEqual({ attempted: 6, sent: 6, failed: 0 });
  expect([...found.values()]).toEqual([1, 1, 1, 1, 1, 1]);
});
