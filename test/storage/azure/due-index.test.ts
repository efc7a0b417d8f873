/**
 * `ledger`'s sweeps take due entries under a lease on their due markers (takeDueWork): a hundred
 * markers to a call, no entry written, one sweep per entry.
 */
import { describe, expect, test } from "bun:test";
import type { TableClient } from "@azure/data-tables";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { dueIndexTable, ttlIndexTable } from "../../../src/config/settings.ts";
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
});
