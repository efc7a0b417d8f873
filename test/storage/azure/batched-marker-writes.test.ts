import { describe, expect, test } from "bun:test";
import type { TableClient } from "@azure/data-tables";
import { azurite, connectionStringFor, freshTables } from "../../../dev/azurite.ts";
import { createBatchedMarkerWrites } from "../../../src/storage/azure/batched-marker-writes.ts";
import { createTableClient, queryAll } from "../../../src/storage/azure/client.ts";
import { countedTable } from "../../support/counted-table.ts";

const marker = (rowKey: string, extra: Record<string, unknown> = {}) => ({ partitionKey: "p", rowKey, ...extra });
const rowKeys = async (client: TableClient) => (await queryAll(client, "PartitionKey eq 'p'")).map((row) => String(row.rowKey)).sort();

describe("batched marker writes", () => {
  test("writes made while one of their partition is in flight leave together, in one transaction", async () => {
    const { client, calls } = await countedTable();
    const writes = createBatchedMarkerWrites(client);
    const before = calls();
    const first = writes.write(["upsert", marker("a"), "Merge"]);
    const rest = Array.from({ length: 20 }, (_, i) => writes.write(["upsert", marker(`b${String(i).padStart(2, "0")}`), "Merge"]));
    expect((await Promise.all([first, ...rest])).every((stored) => stored)).toBe(true);
    // The first alone (nothing was in flight), the twenty others in the next transaction.
    expect(calls() - before).toBe(2);
    expect(await rowKeys(client)).toHaveLength(21);
  });

  test("partitions do not wait for each other", async () => {
    const { client, calls } = await countedTable();
    const writes = createBatchedMarkerWrites(client);
    const before = calls();
    await Promise.all([writes.write(["upsert", marker("a"), "Merge"]), writes.write(["upsert", { partitionKey: "q", rowKey: "a" }, "Merge"])]);
    expect(calls() - before).toBe(2);
  });

  test("a deferred change rides with the next write of its partition, and a missing row's delete does not fail the batch's writes", async () => {
    const { client, calls } = await countedTable();
    const writes = createBatchedMarkerWrites(client);
    await writes.write(["upsert", marker("kept"), "Merge"]);
    const before = calls();
    const blocker = writes.write(["upsert", marker("blocker"), "Merge"]);
    writes.defer(["delete", marker("kept")]);
    writes.defer(["delete", marker("never-there")]);
    await Promise.all([blocker, writes.write(["upsert", marker("new"), "Merge"])]);
    await writes.flush();
    // The blocker; the two deletes and the write in one transaction, which failed on the missing
    // row; that transaction's three changes replayed one by one.
    expect(calls() - before).toBe(5);
    expect(await rowKeys(client)).toEqual(["blocker", "new"]);
  });

  test("of two claims of one row exactly one wins, and a batch with a taken row still stores the others", async () => {
    const { client } = await countedTable();
    const writes = createBatchedMarkerWrites(client);
    await writes.write(["create", marker("taken", { by: "earlier" })]);
    const blocker = writes.write(["create", marker("first")]);
    const answers = await Promise.all([
      blocker,
      writes.write(["create", marker("twice", { by: "one" })]),
      writes.write(["create", marker("twice", { by: "two" })]),
      writes.write(["create", marker("taken", { by: "later" })]),
      writes.write(["create", marker("free")]),
    ]);
    expect(answers[0]).toBe(true);
    expect([answers[1], answers[2]].filter(Boolean)).toHaveLength(1);
    expect(answers[3]).toBe(false);
    expect(answers[4]).toBe(true);
    expect((await client.getEntity("p", "taken")).by).toBe("earlier");
    expect(await rowKeys(client)).toEqual(["first", "free", "taken", "twice"]);
  });

  test("the last change queued for a row wins, and the earlier change's caller learns when it is stored", async () => {
    const { client } = await countedTable();
    const writes = createBatchedMarkerWrites(client);
    const blocker = writes.write(["upsert", marker("blocker"), "Merge"]);
    const written = writes.write(["upsert", marker("row", { v: 1 }), "Replace"]);
    const rewritten = writes.write(["upsert", marker("row", { v: 2 }), "Replace"]);
    expect(await Promise.all([blocker, written, rewritten])).toEqual([true, true, true]);
    expect((await client.getEntity("p", "row")).v).toBe(2);
  });

  test("a transaction the storage refuses whole (throttled) rejects every caller at once, without a call per change", async () => {
    const { connection } = await azurite();
    let calls = 0;
    const client = createTableClient(freshTables().jobs, {
      connection,
      maxRetries: 0,
      configureClient: (c) =>
        c.pipeline.addPolicy({
          name: "throttle-batches",
          sendRequest: async (request, next) => {
            calls++;
            if (request.url.endsWith("$batch")) return { request, status: 503, headers: request.headers, bodyAsText: "" };
            return next(request);
          },
        }),
    });
    await client.createTable();
    const writes = createBatchedMarkerWrites(client);
    const before = calls;
    const blocker = writes.write(["upsert", marker("blocker"), "Merge"]);
    const batched = [writes.write(["upsert", marker("a"), "Merge"]), writes.write(["upsert", marker("b"), "Merge"])];
    expect(await blocker).toBe(true);
    expect((await Promise.allSettled(batched)).map((a) => a.status)).toEqual(["rejected", "rejected"]);
    // The blocker alone, then one transaction for both; no replay of each.
    expect(calls - before).toBe(2);
  });

  test("an awaited write rejects with the storage's error when the storage does not answer", async () => {
    await azurite();
    const client = createTableClient(freshTables().jobs, {
      connection: connectionStringFor(1),
      configureClient: (c) => c.pipeline.removePolicy({ name: "retryPolicy" }),
    });
    const writes = createBatchedMarkerWrites(client);
    const answers = await Promise.allSettled([writes.write(["upsert", marker("a"), "Merge"]), writes.write(["upsert", marker("b"), "Merge"])]);
    expect(answers.map((a) => a.status)).toEqual(["rejected", "rejected"]);
  });
});
