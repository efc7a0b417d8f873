import { expect, test } from "bun:test";
import { sampleJob, storeJob } from "../../../dev/job-fixtures.ts";
import { StorageFullError } from "../../../src/domain/errors.ts";
import { cancelJob } from "../../../src/domain/step-events.ts";
import { createMemoryStore } from "../../../src/storage/memory/memory-store.ts";
import { describeStoreContract } from "../job-store-contract.ts";

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

test("memory: at LUCIUS_MEMORY_MAX_JOBS the oldest ended job makes room; with every job open a new one is refused", async () => {
  const store = createMemoryStore({ maxJobs: 3 });
  const t0 = Date.parse("2026-01-01T00:00:00.000Z");
  const stored = [];
  for (let i = 0; i < 3; i++) stored.push(await storeJob(store, sampleJob("acme", { now: new Date(t0 + i * 1000) })));
  const refused = store.createJob(sampleJob(), null);
  await expect(refused).rejects.toBeInstanceOf(StorageFullError);
  await expect(refused).rejects.toMatchObject({ retryAfterSeconds: 5 });

  // Two end (the later-created first): the one that ended first is evicted first.
  await store.saveChanges(stored[2]!.job.jobId, cancelJob(stored[2]!, new Date(t0 + 10_000))!);
  await store.saveChanges(stored[0]!.job.jobId, cancelJob(stored[0]!, new Date(t0 + 20_000))!);
  const next = await storeJob(store, sampleJob());
  expect(await store.getJob(stored[2]!.job.jobId)).toBeNull();
  expect((await store.listJobs("acme", { limit: 10, cursor: null })).items.map((i) => i.jobId)).not.toContain(stored[2]!.job.jobId);
  expect(await store.getJob(stored[0]!.job.jobId)).not.toBeNull();
  expect(await store.getJob(next.job.jobId)).not.toBeNull();
  // Storing the same job again (a retry) needs no room.
  expect((await store.createJob(next, null)).outcome).toBe("stored");
});

test("memory: a replay is answered while the store is full of open jobs", async () => {
  const store = createMemoryStore({ maxJobs: 1 });
  const first = sampleJob();
  const claim = { tenantId: "acme", key: "k", fingerprint: "f", jobId: first.job.jobId, createdAt: first.job.createdAt };
  await storeJob(store, first, claim);
  const replay = sampleJob();
  expect(await store.createJob(replay, { ...claim, jobId: replay.job.jobId })).toMatchObject({ outcome: "key-taken", existing: { jobId: first.job.jobId } });
  await expect(store.createJob(sampleJob(), null)).rejects.toBeInstanceOf(StorageFullError);
});
