import { describe, expect, test } from "bun:test";
import { ConcurrencyConflictError } from "../../src/domain/errors.ts";
import { applyPublished, recordPublishFailure } from "../../src/domain/transitions.ts";
import { createLedgerStore, JOB_ROW, outboxRow, stepRow } from "../../src/ledger/ledger-store.ts";
import { createTableClient } from "../../src/ledger/azure/client.ts";
import { azurite, freshTables } from "../support/azurite.ts";
import { describeStoreContract, sampleJob, storeJob } from "./store-contract.ts";

async function makeStore() {
  const { connection } = await azurite();
  const tables = freshTables();
  const store = createLedgerStore({ connection, tables, maxRetries: 0 });
  await store.init();
  return Object.assign(store, { tables, connection });
}

describeStoreContract("ledger (Azurite)", makeStore);

describe("ledger layout", () => {
  test("job, steps and outbox share the job's partition under the layout's row keys", async () => {
    const store = await makeStore();
    const { job, steps, outbox } = await storeJob(store);
    const client = createTableClient(store.tables.ledger, { connection: store.connection });
    const rows = [];
    for await (const row of client.listEntities({ queryOptions: { filter: `PartitionKey eq '${job.jobId}'` } })) rows.push(row.rowKey);
    expect(rows.sort()).toEqual([JOB_ROW, outboxRow(outbox[0]!), stepRow(steps[0]!), stepRow(steps[1]!)].sort());
    expect(stepRow(steps[1]!)).toBe(`STEP_0001_${steps[1]!.stepId}`);
  });

  test("saveChanges is one transaction: a stale etag on any row writes none of them", async () => {
    const store = await makeStore();
    const { job, steps, outbox } = await storeJob(store);
    const now = new Date().toISOString();
    await store.saveChanges(job.jobId, { outbox: [recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })] });
    const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, now);
    await expect(store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] })).rejects.toBeInstanceOf(ConcurrencyConflictError);
    const read = (await store.getJob(job.jobId))!;
    expect([read.job.status, read.steps[0]!.status, read.outbox[0]!.status]).toEqual(["accepted", "pending", "pending"]);
  });

  test("a job of more than 100 rows is refused before any call", async () => {
    const store = await makeStore();
    const planned = sampleJob();
    const many = { ...planned, steps: Array.from({ length: 100 }, (_, index) => ({ ...planned.steps[0]!, index, stepId: `${planned.job.jobId}.s${index}` })) };
    await expect(store.createJob(many, null)).rejects.toThrow(/100/);
    expect(await store.getJob(planned.job.jobId)).toBeNull();
  });
});
