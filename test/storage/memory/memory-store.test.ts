import { expect, test } from "bun:test";
import { createMemoryStore } from "../../../src/storage/memory/memory-store.ts";
import { describeStoreContract, sampleJob, storeJob } from "../job-store-contract.ts";

describeStoreContract("memory", async () => createMemoryStore(), { atomicChanges: true });

test("memory: stored entities cannot be changed through what the store hands out", async () => {
  const store = createMemoryStore();
  const { job } = await storeJob(store);
  const read = (await store.getJob(job.jobId))!;
  expect(() => {
    (read.job as { status: string }).status = "failed";
  }).toThrow(TypeError);
  expect(() => {
    (read.job.payload as { documentId: string }).documentId = "changed";
  }).toThrow(TypeError);
  read.outbox.pop();
  expect((await store.getJob(job.jobId))!.outbox).toHaveLength(1);
});

test("memory: the due index finds an entry at its latest due time only, and finding does not take it", async () => {
  const store = createMemoryStore();
  const { job, outbox } = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 0 }));
  const now = new Date(Date.parse(outbox[0]!.nextAttemptAt!) + 1000);
  expect((await store.findDueOutbox(now, 10)).map((w) => w.entry.outboxId)).toEqual([outbox[0]!.outboxId]);
  expect((await store.findDueOutbox(now, 10)).map((w) => w.entry.outboxId)).toEqual([outbox[0]!.outboxId]);
  const later = new Date(now.getTime() + 60_000).toISOString();
  await store.saveChanges(job.jobId, { outbox: [{ ...(await store.getJob(job.jobId))!.outbox[0]!, nextAttemptAt: later }] });
  expect(await store.findDueOutbox(now, 10)).toEqual([]);
  expect((await store.findDueOutbox(new Date(Date.parse(later) + 1), 10)).map((w) => w.entry.nextAttemptAt)).toEqual([later]);
});
