import { expect, test } from "bun:test";
import { ConcurrencyConflictError } from "../../src/domain/errors.ts";
import { applyPublished, recordPublishFailure } from "../../src/domain/transitions.ts";
import { createMemoryStore } from "../../src/ledger/memory-store.ts";
import { describeStoreContract, storeJob } from "./store-contract.ts";

describeStoreContract("memory", async () => createMemoryStore());

test("memory: saveChanges with one stale etag writes nothing of the change", async () => {
  const store = createMemoryStore();
  const { job, steps, outbox } = await storeJob(store);
  const now = new Date().toISOString();
  await store.saveChanges(job.jobId, { outbox: [recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })] });
  const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, now);
  await expect(store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] })).rejects.toBeInstanceOf(ConcurrencyConflictError);
  const read = (await store.getJob(job.jobId))!;
  expect([read.job.status, read.steps[0]!.status]).toEqual(["accepted", "pending"]);
});

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
