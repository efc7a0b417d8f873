import { expect, test } from "bun:test";
import { createMemoryStore } from "../../../src/storage/memory/memory-store.ts";
import { describeStoreContract, storeJob } from "../job-store-contract.ts";

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
