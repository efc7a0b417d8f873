/**
 * The deadline index's shard count, recorded in its table: 8 on a new table, 4 for a table whose
 * markers were written before the count was recorded (they are still found), and a configured
 * count other than the recorded one stops the start. And a deadline marker is written once per
 * deadline by a process, not again with every write of its step.
 */
import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { createTableClient } from "../../../src/storage/azure/client.ts";
import { createDeadlineIndex } from "../../../src/storage/azure/deadline-index.ts";
import { shardOf } from "../../../src/storage/azure/due-index.ts";
import { LAYOUT_PARTITION } from "../../../src/storage/azure/recorded-count.ts";
import { createSingleTableStore } from "../../../src/storage/azure/single-table-store.ts";

async function dueTable() {
  const { connection } = await azurite();
  const client = createTableClient(freshTables().jobs, { connection });
  await client.createTable();
  return client;
}

describe("recorded shard counts", () => {
  test("a new table records 8 deadline shards; the same table opened again with another count is refused, naming both", async () => {
    const client = await dueTable();
    await createDeadlineIndex(client).init();
    expect((await client.getEntity(LAYOUT_PARTITION, "deadline-index")).count).toBe(8);
    await expect(createDeadlineIndex(client, { shards: 16 }).init()).rejects.toThrow(/LUCIUS_DEADLINE_SHARDS=16.*written with 8\b/);
    await createDeadlineIndex(client, { shards: 8 }).init();
  });

  test("a table with markers from before the record keeps their 4 shards, and its expired markers are still found", async () => {
    const { connection } = await azurite();
    const tables = freshTables();
    const store = createSingleTableStore({ connection, tables: { ...tables, due: `${tables.ledger}Due`, ttl: `${tables.ledger}Ttl` }, maxRetries: 0 });
    const due = createTableClient(`${tables.ledger}Due`, { connection });
    await due.createTable();
    // A marker as the fixed four-shard layout wrote it, for a step whose job is not stored (an orphan, old enough).
    const stepId = "01a23e00-0000-7000-8000-000000000000.s0";
    const deadlineAt = new Date(Date.now() - 120_000).toISOString();
    await due.createEntity({
      partitionKey: `deadline-${shardOf(stepId, 4)}`,
      rowKey: `${deadlineAt}_${stepId}`,
      jobId: stepId.split(".")[0],
      stepId,
      stepIndex: 0,
      deadlineAt,
      createdAt: deadlineAt,
    });
    await store.init();
    expect((await due.getEntity(LAYOUT_PARTITION, "deadline-index").catch(() => null))?.count ?? 4).toBe(4);
    // The sweep reads the four old shards: it meets the orphan and removes it.
    await store.findExpiredSteps(new Date(), 10);
    await store.close();
    const left = [];
    for await (const row of due.listEntities({ queryOptions: { filter: "PartitionKey ge 'deadline-' and PartitionKey lt 'deadline.'" } }))
      left.push(row.rowKey);
    expect(left).toEqual([]);
  });
});

describe("deadline markers", () => {
  test("a step written again with the same deadline (its publish marked, say) is not marked again; a moved deadline is", async () => {
    const { connection } = await azurite();
    const tables = freshTables();
    const writes: string[] = [];
    const store = createSingleTableStore({
      connection,
      tables: { ...tables, due: `${tables.ledger}Due`, ttl: `${tables.ledger}Ttl` },
      maxRetries: 0,
      configureClient: (client) =>
        client.pipeline.addPolicy({
          name: "countDeadlineMarkers",
          sendRequest(request, next) {
            const path = decodeURIComponent(new URL(request.url).pathname);
            if (request.method !== "GET" && path.includes("PartitionKey='deadline-")) writes.push(path);
            return next(request);
          },
        }),
    });
    await store.init();
    const planned = sampleJob("acme", { timeoutSeconds: 600 });
    const stored = await storeJob(store, planned);
    expect(writes).toHaveLength(1);
    const step = stored.steps[0]!;
    const once = await store.saveChanges(step.jobId, { steps: [{ ...step, status: "initiated", startedAt: new Date().toISOString() }] });
    expect(writes).toHaveLength(1);
    await store.saveChanges(step.jobId, { steps: [{ ...once.steps[0]!, deadlineAt: new Date(Date.now() + 900_000).toISOString() }] });
    expect(writes).toHaveLength(2);
    await store.close();
  });
});
