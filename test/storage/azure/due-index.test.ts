/**
 * `ledger`'s sweeps take due entries under a lease on their due markers (takeDueWork): a hundred
 * markers to a call, no entry written, one sweep per entry.
 */
import { describe, expect, test } from "bun:test";
import type { TableClient } from "@azure/data-tables";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { dueIndexTable, ttlIndexTable } from "../../../src/config/settings.ts";
import { childStepIdFor, directiveIdFor } from "../../../src/domain/ids.ts";
import { withdrawEntry } from "../../../src/domain/transitions.ts";
import { silentLogger } from "../../../src/logging/logger.ts";
import { createDispatcher } from "../../../src/outbox/dispatcher.ts";
import { leaseEntries } from "../../../src/outbox/lease.ts";
import { createSweeper } from "../../../src/outbox/sweeper.ts";
import { createTableClient } from "../../../src/storage/azure/client.ts";
import { createDueIndex } from "../../../src/storage/azure/due-index.ts";
import { createSingleTableStore } from "../../../src/storage/azure/single-table-store.ts";

const FAR_FUTURE = new Date("9999-01-01T00:00:00Z");

/** Two stores (two replicas) on one fresh ledger, and the writes each sends to the due table. */
async function ledger() {
  const { connection } = await azurite();
  const names = freshTables();
  const tables = { ...names, due: dueIndexTable(names.ledger), ttl: ttlIndexTable(names.ledger) };
  const dueWrites = { count: 0 };
  const countDueWrites = (client: TableClient) =>
    client.pipeline.addPolicy({
      name: "count due writes",
      sendRequest: (request, next) => {
        const url = decodeURIComponent(request.url);
        if (request.method !== "GET" && (url.includes(tables.due) || (url.endsWith("$batch") && client.tableName === tables.due))) dueWrites.count++;
        return next(request);
      },
    });
  const replica = () => createSingleTableStore({ connection, tables, configureClient: countDueWrites });
  const [a, b] = [replica(), replica()];
  await a.init();
  return { a, b, dueWrites, connection, tables };
}

const leaseFor = (token: string, now = new Date(), seconds = 60) => ({ now, until: new Date(now.getTime() + seconds * 1000), token });

describe("ledger: due entries taken under a lease on their markers", () => {
  test("a sweep leases 30 markers in a call per shard and writes no entry; another takes none of them, even asking for everything, until the lease runs out", async () => {
    const { a, b, dueWrites } = await ledger();
    const jobs = await Promise.all(Array.from({ length: 30 }, () => storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }))));
    const etags = new Map(jobs.map((job) => [job.outbox[0]!.outboxId, job.outbox[0]!.etag]));
    const now = new Date(Date.now() + 1000);
    dueWrites.count = 0;

    const first = await a.takeDueOutbox!(now, 100, leaseFor("a", now));
    expect(first.taken.map((work) => work.entry.outboxId).sort()).toEqual([...etags.keys()].sort());
    // The entries as stored, unwritten: the publish's outcome is their first write.
    for (const work of first.taken) expect(work.entry.etag).toBe(etags.get(work.entry.outboxId)!);
    expect(dueWrites.count).toBeLessThanOrEqual(4);

    expect((await b.takeDueOutbox!(now, 100, leaseFor("b", now))).taken).toEqual([]);
    const everything = await b.takeDueOutbox!(FAR_FUTURE, 100, leaseFor("b", now));
    expect(everything.taken).toEqual([]);
    expect(everything.seen).toBe(30);

    const later = new Date(now.getTime() + 61_000);
    expect((await b.takeDueOutbox!(later, 100, leaseFor("b", later))).taken).toHaveLength(30);
  });

  test("of two replicas sweeping the same 40 due entries at once, each entry is taken by exactly one", async () => {
    const { a, b } = await ledger();
    await Promise.all(Array.from({ length: 40 }, () => storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }))));
    const now = new Date(Date.now() + 1000);
    const [one, two] = await Promise.all([a.takeDueOutbox!(now, 100, leaseFor("a", now)), b.takeDueOutbox!(now, 100, leaseFor("b", now))]);
    const ids = [...one.taken, ...two.taken].map((work) => work.entry.outboxId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(40);
  });

  test("a transaction refused for the one marker another sweep took is replayed marker by marker; a lease met again with its own token is ours", async () => {
    const { a, connection, tables } = await ledger();
    // Nine markers over four shards: one shard holds three at least.
    await Promise.all(Array.from({ length: 9 }, () => storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }))));
    const due = createDueIndex(createTableClient(tables.due, { connection }));
    const until = new Date(Date.now() + 60_000).toISOString();
    const all = await due.dueMarkers(new Date(Date.now() + 1000).toISOString(), 10);
    const shards = Map.groupBy(all, (m) => m.partitionKey);
    // The markers of the fullest shard, read once: the etags both sweeps hold.
    const read = [...shards.values()].sort((x, y) => y.length - x.length)[0]!;
    expect(read.length).toBeGreaterThanOrEqual(3);
    const [taken, ...rest] = read;
    expect(await due.leaseMarkers([taken!], until, "a")).toHaveLength(1);
    const leased = await due.leaseMarkers(read, until, "b");
    expect(leased.map((m) => m.outboxId).sort()).toEqual(rest.map((m) => m.outboxId).sort());
    // A's lease written, its answer lost: the retry meets A's own token and the marker is A's.
    expect((await due.leaseMarkers([taken!], until, "a")).map((m) => m.leaseToken)).toEqual(["a"]);
    expect(await due.leaseMarkers([taken!], until, "c")).toEqual([]);
  });

  test("an operator's retry of one entry (an entry lease) waits for a sweep holding its marker, and takes it once that lease ran out", async () => {
    const { a, b } = await ledger();
    const job = await storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }));
    const now = new Date(Date.now() + 1000);
    const [taken] = (await a.takeDueOutbox!(now, 10, leaseFor("sweep", now))).taken;
    expect(taken?.entry.outboxId).toBe(job.outbox[0]!.outboxId);
    expect(await leaseEntries([taken!], { store: b, leaseSeconds: 30, now })).toEqual([]);
    const later = new Date(now.getTime() + 61_000);
    const retried = await leaseEntries([taken!], { store: b, leaseSeconds: 30, now: later });
    expect(retried.map((work) => work.entry.lease)).toEqual([expect.any(String)]);
    // Now the sweep passes over it in turn: the retry holds both the marker and the entry.
    expect((await a.takeDueOutbox!(later, 10, leaseFor("sweep-2", later))).taken).toEqual([]);
  });

  test("a leased marker whose entry ended is removed only if no one wrote it since: a reset's fresh marker stays", async () => {
    const { a, connection, tables } = await ledger();
    const [one, two] = [await storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 })), await storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }))];
    const due = createDueIndex(createTableClient(tables.due, { connection }));
    const until = new Date(Date.now() + 60_000).toISOString();
    const markers = await due.leaseMarkers(await due.dueMarkers(new Date(Date.now() + 1000).toISOString(), 10), until, "sweep");
    const markerOf = (outboxId: string) => markers.find((m) => m.outboxId === outboxId)!;
    // The first entry is reset meanwhile: its marker written afresh.
    await due.markDue([one.outbox[0]!], new Date().toISOString());
    await due.deleteLeasedMarker(markerOf(one.outbox[0]!.outboxId));
    await due.deleteLeasedMarker(markerOf(two.outbox[0]!.outboxId));
    const left = (await due.pendingMarkers()).map((m) => m.outboxId);
    expect(left).toEqual([one.outbox[0]!.outboxId]);
  });
});

describe("ledger: a sweep meets a map child's directive of a job that ended", () => {
  test("it is withdrawn, not published (the job's closing was cut short)", async () => {
    const { a } = await ledger();
    const stored = await storeJob(a, sampleJob("acme", { retryDelaySeconds: 0 }));
    const { jobId } = stored.job;
    const at = new Date().toISOString();
    const { etag: _s, ...step } = stored.steps[0]!;
    const child = { ...step, stepId: childStepIdFor(jobId, 0, 0), itemIndex: 0 };
    const { etag: _o, ...entry } = stored.outbox[0]!;
    const directive = { ...entry, stepId: child.stepId, outboxId: directiveIdFor(child.stepId, 0) };
    await a.saveChanges(jobId, { steps: [child], outbox: [directive] });
    // The job ends; its own directive is withdrawn, the child's is left behind.
    await a.saveChanges(jobId, {
      job: { ...stored.job, status: "cancelled" },
      outbox: [withdrawEntry(stored.outbox[0]!, "job ended before this directive was sent", at)],
    });
    const published: string[] = [];
    const dispatcher = createDispatcher({
      store: a,
      publisher: {
        async publish(_topic, messages) {
          published.push(...messages.map((m) => String(m.messageId)));
          return messages.map(() => ({ ok: true as const }));
        },
        async check() {},
        async close() {},
      },
      logger: silentLogger,
      publishTimeoutSeconds: 10,
      retryDelaySeconds: 1,
      maxAttempts: 5,
    });
    const sweeper = createSweeper({ store: a, dispatcher, logger: silentLogger, intervalSeconds: 5, batchSize: 10, leaseSeconds: 30 });
    await sweeper.drainAll();
    expect(published).toEqual([]);
    const { outbox } = await a.getChildren(jobId, [child.stepId]);
    expect(outbox.map((o) => o.status)).toEqual(["withdrawn"]);
  });
});
