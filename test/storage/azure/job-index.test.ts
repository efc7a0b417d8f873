/**
 * The job index's buckets on Azurite: a tenant's rows spread over its partitions, listings merge
 * them newest first with stable cursors and filters, and the bucket count the table was written
 * with is kept (a different one stops the start; a table from before buckets is one bucket).
 */
import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { newJobId } from "../../../src/domain/ids.ts";
import { createTableClient } from "../../../src/storage/azure/client.ts";
import { shardOf } from "../../../src/storage/azure/due-index.ts";
import { indexRowKey } from "../../../src/storage/azure/entities.ts";
import { createJobIndex } from "../../../src/storage/azure/job-index.ts";
import { createSingleTableStore } from "../../../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../../../src/storage/job-store.ts";

async function ledger(buckets?: number, tables = freshTables()) {
  const { connection } = await azurite();
  const store = createSingleTableStore({ connection, tables, maxRetries: 0, ...(buckets === undefined ? {} : { jobIndexBuckets: buckets }) });
  await store.init();
  return { store, tables, connection };
}

async function everyPage(store: JobStore, tenant: string, filter = {}): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const page: Awaited<ReturnType<JobStore["listJobs"]>> = await store.listJobs(tenant, { limit: 4, cursor }, filter);
    seen.push(...page.items.map((item) => item.jobId));
    cursor = page.nextCursor;
  } while (cursor);
  return seen;
}

describe("job index buckets", () => {
  test("one tenant's jobs spread over its buckets; pages merge them newest first, and filters hold across buckets", async () => {
    const { store, tables, connection } = await ledger();
    const base = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < 13; i++) {
      // The first four ids are drawn until each lands in its own bucket, so every bucket is in
      // use whatever the hash does with random ids (uuidv7 stays increasing within the process).
      let jobId = newJobId();
      while (i < 4 && shardOf(jobId, 4) !== i) jobId = newJobId();
      const job = sampleJob("acme", { jobId, now: new Date(base + i) });
      ids.push(job.job.jobId);
      await storeJob(store, i % 3 === 0 ? { ...job, job: { ...job.job, requestType: "document.other" } } : job);
    }
    const partitions = new Set<string>();
    for await (const row of createTableClient(tables.jobIndex, { connection }).listEntities()) partitions.add(row.partitionKey!);
    // The default of a new table: four buckets, each holding some of the tenant's jobs.
    expect([...partitions].filter((p) => p.startsWith("acme")).sort()).toEqual(["acme~0", "acme~1", "acme~2", "acme~3"]);
    expect(await everyPage(store, "acme")).toEqual([...ids].reverse());
    expect(await everyPage(store, "acme", { requestType: "document.other" })).toEqual(ids.filter((_, i) => i % 3 === 0).reverse());
    const first = (await store.listJobs("acme", { limit: 1, cursor: null })).items[0];
    expect(first?.tenantId).toBe("acme");
  });

  test("a count other than the one the table was written with stops the start, naming both", async () => {
    const tables = freshTables();
    await ledger(4, tables);
    await expect(ledger(8, tables)).rejects.toThrow(/LUCIUS_JOB_INDEX_BUCKETS=8.*written with 4\b/);
    // Unset: the recorded count is used.
    await ledger(undefined, tables);
  });

  test("a table written before buckets (rows, no record) is read as one bucket, and listed", async () => {
    const { connection } = await azurite();
    const tables = freshTables();
    const client = createTableClient(tables.jobIndex, { connection });
    await client.createTable();
    const legacy = sampleJob("acme").job;
    await client.createEntity({
      partitionKey: "acme",
      rowKey: indexRowKey(legacy.jobId),
      jobId: legacy.jobId,
      requestType: "document.ingest",
      status: "accepted",
      createdAt: legacy.createdAt,
    });
    const index = createJobIndex(client);
    await index.init();
    expect((await index.list("acme", { limit: 10, cursor: null })).items.map((i) => [i.jobId, i.tenantId])).toEqual([[legacy.jobId, "acme"]]);
    await expect(createJobIndex(client, { buckets: 4 }).init()).rejects.toThrow(/LUCIUS_JOB_INDEX_BUCKETS=4.*written with 1\b/);
  });
});
