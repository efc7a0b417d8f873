import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { createTableClient } from "../../../src/storage/azure/client.ts";
import { createSingleTableStore, JOB_ROW, outboxRow, stepRow } from "../../../src/storage/azure/single-table-store.ts";
import { describeStoreContract } from "../job-store-contract.ts";

async function makeStore() {
  const { connection } = await azurite();
  const tables = freshTables();
  const store = createSingleTableStore({ connection, tables, maxRetries: 0 });
  await store.init();
  return Object.assign(store, { tables, connection });
}

describeStoreContract("ledger (Azurite)", makeStore, { atomicChanges: true });

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

  test("a job of more than 100 rows is refused before any call", async () => {
    const store = await makeStore();
    const planned = sampleJob();
    const many = { ...planned, steps: Array.from({ length: 100 }, (_, index) => ({ ...planned.steps[0]!, index, stepId: `${planned.job.jobId}.s${index}` })) };
    await expect(store.createJob(many, null)).rejects.toThrow(/100/);
    expect(await store.getJob(planned.job.jobId)).toBeNull();
  });
});
