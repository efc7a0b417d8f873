import { describe, expect, test } from "bun:test";
import { azurite, freshTables } from "../../dev/azurite.ts";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { dueIndexTable, ttlIndexTable } from "../../src/config/settings.ts";
import { ConcurrencyConflictError } from "../../src/domain/errors.ts";
import { childStepIdFor } from "../../src/domain/ids.ts";
import type { JobAggregate } from "../../src/domain/model.ts";
import { applyPublished, recordPublishFailure } from "../../src/domain/transitions.ts";
import { createSingleTableStore } from "../../src/storage/azure/single-table-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";
import { withRecentJobs } from "../../src/storage/recent-jobs.ts";

/** What a kept copy must equal: the job as a fresh read gives it. */
const comparable = (aggregate: JobAggregate | null) => aggregate && { job: aggregate.job, steps: aggregate.steps, outbox: aggregate.outbox };

describe("recent jobs", () => {
  test("a job is kept as stored, then as each change left it: the kept copy equals a fresh read", async () => {
    const inner = createMemoryStore();
    const store = withRecentJobs(inner, { maxRowsPerChange: 100 });
    const stored = await storeJob(store);
    const { jobId } = stored.job;
    expect(comparable(store.recentJob!(jobId))).toEqual(comparable(await inner.getJob(jobId)));

    const published = applyPublished({ job: stored.job, step: stored.steps[0]!, entry: stored.outbox[0]! }, new Date().toISOString());
    await store.saveChanges(jobId, { job: published.job, steps: [published.step], outbox: [published.entry] });
    expect(comparable(store.recentJob!(jobId))).toEqual(comparable(await inner.getJob(jobId)));
  });

  test("on ledger a fenced change gives its fenced rows new etags, and the kept copy takes them: it still equals a fresh read", async () => {
    const { connection } = await azurite();
    const tables = freshTables();
    const inner = createSingleTableStore({ connection, tables: { ...tables, due: dueIndexTable(tables.ledger), ttl: ttlIndexTable(tables.ledger) } });
    await inner.init();
    const store = withRecentJobs(inner, { maxRowsPerChange: 100 });
    const stored = await storeJob(store);
    const { jobId } = stored.job;
    const now = new Date().toISOString();
    const [failed] = (
      await store.saveChanges(jobId, {
        outbox: [recordPublishFailure(stored.outbox[0]!, { error: "no", retryable: false, now, nextAttemptAt: now, maxAttempts: 1 })],
      })
    ).outbox;
    const kept = store.recentJob!(jobId)!;
    await store.saveChanges(jobId, { job: { ...kept.job, paused: true }, fence: { steps: [], outbox: [failed!] } });
    const fresh = await inner.getJob(jobId);
    expect(fresh!.outbox[0]!.etag).not.toBe(failed!.etag!);
    expect(comparable(store.recentJob!(jobId))).toEqual(comparable(fresh));
  });

  test("a lost conditional write drops the kept copy; the next read keeps the job again", async () => {
    const inner = createMemoryStore();
    const store = withRecentJobs(inner, { maxRowsPerChange: 100 });
    const stored = await storeJob(store);
    const { jobId } = stored.job;
    // Another replica changes the job: the kept copy is stale.
    await inner.saveChanges(jobId, { job: { ...stored.job, paused: true } });
    const stale = store.recentJob!(jobId)!;
    await expect(store.saveChanges(jobId, { job: { ...stale.job, status: "in_progress" } })).rejects.toBeInstanceOf(ConcurrencyConflictError);
    expect(store.recentJob!(jobId)).toBeNull();
    await store.getJob(jobId);
    expect(store.recentJob!(jobId)?.job.paused).toBe(true);
  });

  test("settled waits for the job's changes in flight, and sees them kept; a job with none is settled at once", async () => {
    const inner = createMemoryStore();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const store = withRecentJobs(
      {
        ...inner,
        saveChanges: async (jobId, changes) => {
          await gate;
          return inner.saveChanges(jobId, changes);
        },
      },
      { maxRowsPerChange: 100 },
    );
    const [busy, idle] = [await storeJob(store), await storeJob(store)];
    const writing = store.saveChanges(busy.job.jobId, { job: { ...busy.job, paused: true } });
    let seen = null as boolean | null;
    const waiting = store.settled!(busy.job.jobId).then(() => {
      seen = store.recentJob!(busy.job.jobId)?.job.paused ?? null;
    });
    await store.settled!(idle.job.jobId);
    expect(seen).toBeNull();
    release();
    await Promise.all([writing, waiting]);
    expect(seen).toBe(true);
  });

  test("at most `capacity` jobs are kept, the least recently used dropped first", async () => {
    const store = withRecentJobs(createMemoryStore(), { capacity: 2, maxRowsPerChange: 100 });
    const [a, b] = [await storeJob(store), await storeJob(store)];
    await store.getJob(a.job.jobId);
    const c = await storeJob(store);
    expect(store.recentJob!(a.job.jobId)).not.toBeNull();
    expect(store.recentJob!(b.job.jobId)).toBeNull();
    expect(store.recentJob!(c.job.jobId)).not.toBeNull();
  });

  test("the copies are bounded by bytes too: the oldest dropped past the budget, a job over a sixteenth of it never kept", async () => {
    const inner = createMemoryStore();
    const one = await storeJob(inner);
    const bytes = JSON.stringify([one.job, ...one.steps, ...one.outbox]).length * 2;
    // A job is 40% of this budget: over a sixteenth, so never kept.
    const tight = withRecentJobs(inner, { maxRowsPerChange: 100, maxBytes: bytes * 2.5 });
    expect(tight.recentJob!((await storeJob(tight)).job.jobId)).toBeNull();
    // Room for 40 such jobs by bytes, 100 by count: of 45 stored the first go, the last stay.
    const roomy = withRecentJobs(inner, { maxRowsPerChange: 100, maxBytes: bytes * 40, capacity: 100 });
    const stored = [];
    for (let i = 0; i < 45; i++) stored.push(await storeJob(roomy));
    const kept = stored.filter((x) => roomy.recentJob!(x.job.jobId) !== null);
    expect(kept.length).toBeGreaterThanOrEqual(35);
    expect(kept.length).toBeLessThanOrEqual(40);
    expect(roomy.recentJob!(stored[0]!.job.jobId)).toBeNull();
    expect(roomy.recentJob!(stored[44]!.job.jobId)).not.toBeNull();
  });

  test("a map's children are never kept with their job", async () => {
    const store = withRecentJobs(createMemoryStore(), { maxRowsPerChange: 100 });
    const stored = await storeJob(store, sampleJob());
    const { jobId } = stored.job;
    const { etag: _, ...step } = stored.steps[0]!;
    const child = { ...step, stepId: childStepIdFor(jobId, 0, 0), itemIndex: 0 };
    const saved = await store.saveChanges(jobId, { steps: [child] });
    expect(saved.steps.map((s) => s.stepId)).toEqual([child.stepId]);
    expect(store.recentJob!(jobId)?.steps.map((s) => s.stepId)).toEqual(stored.steps.map((s) => s.stepId));
  });
});
