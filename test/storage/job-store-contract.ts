/**
 * The behaviour every JobStore promises. Each backend's test file calls
 * `describeStoreContract` with a factory that gives a fresh, empty store.
 */
import { describe, expect, test } from "bun:test";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { ConcurrencyConflictError, InvalidCursorError } from "../../src/domain/errors.ts";
import { acceptedEntry, type HistoryCause, MAX_HISTORY_ENTRIES, recordChange } from "../../src/domain/history.ts";
import { newJobId, outboxIdFor } from "../../src/domain/ids.ts";
import type { IdempotencyRecord, JobAggregate } from "../../src/domain/model.ts";
import { cancelJob } from "../../src/domain/step-events.ts";
import { applyPublished, finishJob, markOutboxSent, recordPublishFailure, withdrawEntry } from "../../src/domain/transitions.ts";
import type { JobStore } from "../../src/storage/job-store.ts";

const withoutEtags = (aggregate: JobAggregate) => ({
  job: { ...aggregate.job, etag: undefined },
  steps: aggregate.steps.map((s) => ({ ...s, etag: undefined })),
  outbox: aggregate.outbox.map((o) => ({ ...o, etag: undefined })),
});

const claimFor = (aggregate: JobAggregate, key = "k-1"): IdempotencyRecord => ({
  tenantId: aggregate.job.tenantId,
  key,
  fingerprint: `f-${aggregate.job.jobId}`,
  jobId: aggregate.job.jobId,
  createdAt: aggregate.job.createdAt,
});

export interface StoreCapabilities {
  /** saveChanges writes all of its entities or none (memory, ledger); `table` cannot. */
  atomicChanges: boolean;
}

export function describeStoreContract(name: string, makeStore: () => Promise<JobStore>, capabilities: StoreCapabilities) {
  describe(`JobStore contract: ${name}`, () => {
    if (capabilities.atomicChanges) {
      test("saveChanges with one stale etag writes nothing of the change", async () => {
        const store = await makeStore();
        const { job, steps, outbox } = await storeJob(store);
        const now = new Date().toISOString();
        await store.saveChanges(job.jobId, {
          outbox: [recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })],
        });
        const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, now);
        await expect(store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] })).rejects.toBeInstanceOf(
          ConcurrencyConflictError,
        );
        const read = (await store.getJob(job.jobId))!;
        expect([read.job.status, read.steps[0]!.status, read.outbox[0]!.status]).toEqual(["accepted", "pending", "pending"]);
      });
    }

    test("createJob stores job, steps and outbox exactly, and getJob returns them with etags", async () => {
      const store = await makeStore();
      const planned = sampleJob();
      const stored = await storeJob(store, planned);
      expect(stored.job.etag).toBeString();
      expect(stored.outbox[0]?.etag).toBeString();
      const read = await store.getJob(planned.job.jobId);
      expect(read).not.toBeNull();
      expect(withoutEtags(read!)).toEqual(withoutEtags(planned) as never);
      expect(read!.job.etag).toBe(stored.job.etag!);
      expect(read!.outbox[0]!.etag).toBe(stored.outbox[0]!.etag!);
    });

    test("a large, nested, non-ASCII payload comes back exactly", async () => {
      const store = await makeStore();
      const payload = { documentId: "d1", text: "ü€😀".repeat(25_000), big: "x".repeat(70_000), list: [{ a: null, b: [true, 1.5] }] };
      const planned = sampleJob("acme", { payload });
      await storeJob(store, planned);
      expect((await store.getJob(planned.job.jobId))!.job.payload).toEqual(payload);
    });

    test("getJob of an unknown id is null", async () => {
      const store = await makeStore();
      expect(await store.getJob(newJobId())).toBeNull();
    });

    test("getOutboxEntry reads one entry as stored, with its etag; null when absent", async () => {
      const store = await makeStore();
      const stored = await storeJob(store);
      const entry = stored.outbox[0]!;
      expect(await store.getOutboxEntry(stored.job.jobId, entry.outboxId)).toEqual(entry);
      const sent = (await store.saveChanges(stored.job.jobId, { outbox: [markOutboxSent(entry, new Date().toISOString())] })).outbox[0]!;
      expect(await store.getOutboxEntry(stored.job.jobId, entry.outboxId)).toEqual(sent);
      expect(await store.getOutboxEntry(stored.job.jobId, `${stored.job.jobId}.s9.d0`)).toBeNull();
      expect(await store.getOutboxEntry(newJobId(), entry.outboxId)).toBeNull();
    });

    test("createJob of an existing job id changes nothing and returns what is stored", async () => {
      const store = await makeStore();
      const planned = sampleJob();
      const first = await storeJob(store, planned);
      // A replay plans the job again, later and with whatever the request carries now.
      const later = new Date(Date.parse(planned.job.createdAt) + 60_000).toISOString();
      const again = await storeJob(store, { ...planned, job: { ...planned.job, correlationId: "other", createdAt: later, updatedAt: later } });
      expect(again.job.correlationId).toBe("c");
      expect(again.job.etag).toBe(first.job.etag!);
      const listed = (await store.listJobs("acme", { limit: 10, cursor: null })).items;
      expect(listed).toEqual([expect.objectContaining({ jobId: planned.job.jobId, correlationId: "c", createdAt: planned.job.createdAt })]);
    });

    test("a claimed key: the first job is stored, a second job under the key is not; keys are per tenant", async () => {
      const store = await makeStore();
      const first = sampleJob();
      await storeJob(store, first, claimFor(first));
      const second = sampleJob();
      const result = await store.createJob(second, claimFor(second));
      expect(result.outcome).toBe("key-taken");
      expect(result.outcome === "key-taken" && [result.existing.jobId, result.existing.fingerprint]).toEqual([first.job.jobId, `f-${first.job.jobId}`]);
      expect(await store.getJob(second.job.jobId)).toBeNull();
      const other = sampleJob("globex");
      expect((await store.createJob(other, claimFor(other))).outcome).toBe("stored");
    });

    test("a create retried with its own claim (the first one's answer lost) is stored, not refused as the key's other request", async () => {
      const store = await makeStore();
      const first = sampleJob();
      await storeJob(store, first, claimFor(first));
      const again = await store.createJob(first, claimFor(first));
      expect(again.outcome).toBe("stored");
      if (again.outcome === "stored") expect(again.aggregate.job.jobId).toBe(first.job.jobId);
    });

    test("of 20 concurrent creates under one key exactly one stores its job", async () => {
      const store = await makeStore();
      const jobs = Array.from({ length: 20 }, () => sampleJob());
      const results = await Promise.all(jobs.map((job) => store.createJob(job, claimFor(job, "race"))));
      const stored = results.filter((r) => r.outcome === "stored");
      expect(stored).toHaveLength(1);
      const winner = stored[0]!.outcome === "stored" ? stored[0]!.aggregate.job.jobId : "";
      for (const r of results) if (r.outcome === "key-taken") expect(r.existing.jobId).toBe(winner);
      expect((await store.listJobs("acme", { limit: 100, cursor: null })).items.map((i) => i.jobId)).toEqual([winner]);
    });

    test("listJobs pages a tenant's jobs newest first and only that tenant's", async () => {
      const store = await makeStore();
      const base = Date.now();
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const job = sampleJob("acme", { now: new Date(base + i) });
        ids.push(job.job.jobId);
        await storeJob(store, job);
      }
      await storeJob(store, sampleJob("globex"));
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: Awaited<ReturnType<JobStore["listJobs"]>> = await store.listJobs("acme", { limit: 3, cursor });
        expect(page.items.length).toBeLessThanOrEqual(3);
        seen.push(...page.items.map((item) => item.jobId));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(seen).toEqual([...ids].reverse());
      expect(pages).toBe(3);
      const first = (await store.listJobs("acme", { limit: 1, cursor: null })).items[0];
      expect(first).toEqual({
        jobId: ids.at(-1)!,
        tenantId: "acme",
        requestType: "document.ingest",
        correlationId: "c",
        status: "accepted",
        paused: false,
        createdAt: expect.any(String),
        updatedAt: expect.any(String),
      });
    });

    test("listJobs narrows by status, request type and correlation id, pages newest first, and follows status changes", async () => {
      const store = await makeStore();
      const jobs = [];
      for (let i = 0; i < 6; i++) {
        const planned = sampleJob("acme");
        planned.job.correlationId = i % 2 === 0 ? "even" : "odd";
        jobs.push(await storeJob(store, planned));
      }
      // Jobs 1, 3 and 5 start; job 5 then fails.
      const at = new Date().toISOString();
      for (const started of [jobs[1]!, jobs[3]!, jobs[5]!]) {
        const next = applyPublished({ job: started.job, step: started.steps[0]!, entry: started.outbox[0]! }, at);
        const saved = await store.saveChanges(started.job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] });
        started.job = saved.job!;
      }
      await store.saveChanges(jobs[5]!.job.jobId, { job: finishJob(jobs[5]!.job, "failed", at) });
      const ids = (items: { jobId: string }[]) => items.map((item) => item.jobId);
      const collect = async (filter: Parameters<JobStore["listJobs"]>[2]) => {
        const seen: { jobId: string; status: string }[] = [];
        let cursor: string | null = null;
        do {
          const page: Awaited<ReturnType<JobStore["listJobs"]>> = await store.listJobs("acme", { limit: 1, cursor }, filter);
          seen.push(...page.items);
          cursor = page.nextCursor;
        } while (cursor);
        return seen;
      };
      expect(ids(await collect({ status: "in_progress" }))).toEqual([jobs[3]!.job.jobId, jobs[1]!.job.jobId]);
      expect(await collect({ status: "failed" })).toEqual([expect.objectContaining({ jobId: jobs[5]!.job.jobId, status: "failed" })]);
      expect(ids(await collect({ correlationId: "even" }))).toEqual([jobs[4]!, jobs[2]!, jobs[0]!].map((j) => j.job.jobId));
      expect(ids(await collect({ correlationId: "odd", status: "accepted" }))).toEqual([]);
      expect(ids(await collect({ requestType: "document.ocr" }))).toEqual([]);
      expect((await collect({ requestType: "document.ingest" })).length).toBe(6);
      expect((await store.listJobs("acme", { limit: 10, cursor: null })).items.map((item) => item.status)).toEqual([
        "failed",
        "accepted",
        "in_progress",
        "accepted",
        "in_progress",
        "accepted",
      ]);
    });

    test("listJobs refuses a cursor it did not issue", async () => {
      const store = await makeStore();
      await expect(store.listJobs("acme", { limit: 3, cursor: "%%%" })).rejects.toBeInstanceOf(InvalidCursorError);
    });

    test("saveChanges writes the published state and returns new etags", async () => {
      const store = await makeStore();
      const { job, steps, outbox } = await storeJob(store);
      const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, new Date().toISOString());
      const saved = await store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] });
      expect(saved.job!.etag).not.toBe(job.etag!);
      const read = (await store.getJob(job.jobId))!;
      expect([read.job.status, read.steps[0]!.status, read.steps[1]!.status, read.outbox[0]!.status]).toEqual(["in_progress", "initiated", "pending", "sent"]);
      expect(read.outbox[0]!.etag).toBe(saved.outbox[0]!.etag!);
      expect(read.job.etag).toBe(saved.job!.etag!);
    });

    test("saveChanges with a stale etag is a conflict and leaves the stale entity unchanged", async () => {
      const store = await makeStore();
      const { job, outbox } = await storeJob(store);
      const now = new Date().toISOString();
      const failed = recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 });
      await store.saveChanges(job.jobId, { outbox: [failed] });
      // A second writer still holding the old etag of the entry.
      await expect(store.saveChanges(job.jobId, { outbox: [markOutboxSent(outbox[0]!, now)] })).rejects.toBeInstanceOf(ConcurrencyConflictError);
      const read = (await store.getJob(job.jobId))!;
      expect([read.outbox[0]!.status, read.outbox[0]!.attempts]).toEqual(["pending", 1]);
    });

    test("a fenced change lands only while every fenced row is at its etag; the rows stay as they were, with the etags it returns", async () => {
      const store = await makeStore();
      const { job, steps, outbox } = await storeJob(store);
      const now = new Date().toISOString();
      // The directive moves on without the job's row (a publish outcome, an operator's reset).
      await store.saveChanges(job.jobId, {
        outbox: [recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })],
      });
      const pause = { ...job, paused: true };
      await expect(store.saveChanges(job.jobId, { job: pause, fence: { steps, outbox } })).rejects.toBeInstanceOf(ConcurrencyConflictError);
      const before = (await store.getJob(job.jobId))!;
      expect(before.job.paused).toBe(false);

      const saved = await store.saveChanges(job.jobId, { job: pause, fence: { steps: before.steps, outbox: before.outbox } });
      const after = (await store.getJob(job.jobId))!;
      expect(after.job.paused).toBe(true);
      expect(withoutEtags(after).steps).toEqual(withoutEtags(before).steps);
      expect(withoutEtags(after).outbox).toEqual(withoutEtags(before).outbox);
      expect(saved.fenced!.steps.map((s) => s.etag)).toEqual(after.steps.map((s) => s.etag));
      expect(saved.fenced!.outbox.map((o) => o.etag)).toEqual(after.outbox.map((o) => o.etag));
    });

    test("of two concurrent writers holding the same etag exactly one succeeds", async () => {
      const store = await makeStore();
      const { job, outbox } = await storeJob(store);
      const now = new Date().toISOString();
      const attempt = (error: string) =>
        store.saveChanges(job.jobId, { outbox: [recordPublishFailure(outbox[0]!, { error, retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })] });
      const results = await Promise.allSettled([attempt("a"), attempt("b")]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(results.filter((r) => r.status === "rejected" && r.reason instanceof ConcurrencyConflictError)).toHaveLength(1);
      expect((await store.getJob(job.jobId))!.outbox[0]!.attempts).toBe(1);
    });

    test("saveChanges inserts a new outbox entry (with the results it carries), and refuses to insert one that exists", async () => {
      const store = await makeStore();
      const { job, outbox } = await storeJob(store);
      const { etag: _old, ...template } = outbox[0]!;
      // A later step's directive carries the earlier steps' results.
      const results = { ocr: { pages: 3, text: "é".repeat(40_000) } };
      const added = { ...template, outboxId: outboxIdFor(job.jobId, 1), stepId: template.stepId, status: "pending" as const, results };
      const saved = await store.saveChanges(job.jobId, { outbox: [added] });
      expect(saved.outbox[0]!.etag).toBeString();
      expect((await store.getJob(job.jobId))!.outbox.map((o) => o.outboxId).sort()).toEqual([outbox[0]!.outboxId, added.outboxId].sort());
      expect((await store.getOutboxEntry(job.jobId, added.outboxId))!.results).toEqual(results);
      await expect(store.saveChanges(job.jobId, { outbox: [added] })).rejects.toBeInstanceOf(ConcurrencyConflictError);
    });

    test("findDueOutbox returns pending entries due by now, earliest first, with job and step, up to the limit", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
      // Due at +10, +20, +30, +40 (created at +0..+3 with a 10 s delay each... see below).
      const jobs = [];
      for (let i = 0; i < 4; i++) jobs.push(await storeJob(store, sampleJob("acme", { now: at(i * 10), retryDelaySeconds: 10 })));
      // One sent, one rescheduled to +100: neither is due at +35.
      const sent = jobs[0]!;
      const next = applyPublished({ job: sent.job, step: sent.steps[0]!, entry: sent.outbox[0]! }, at(11).toISOString());
      await store.saveChanges(sent.job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] });
      const later = jobs[1]!;
      await store.saveChanges(later.job.jobId, {
        outbox: [
          recordPublishFailure(later.outbox[0]!, {
            error: "x",
            retryable: true,
            now: at(20).toISOString(),
            nextAttemptAt: at(100).toISOString(),
            maxAttempts: 3,
          }),
        ],
      });

      const due = await store.findDueOutbox(at(35), 10);
      expect(due.map((d) => d.entry.outboxId)).toEqual([jobs[2]!.outbox[0]!.outboxId]);
      expect(due[0]!.job.jobId).toBe(jobs[2]!.job.jobId);
      expect(due[0]!.step.stepId).toBe(jobs[2]!.outbox[0]!.stepId);
      expect(due[0]!.entry.etag).toBeString();

      const all = await store.findDueOutbox(at(200), 10);
      expect(all.map((d) => d.job.jobId)).toEqual([jobs[2]!.job.jobId, jobs[3]!.job.jobId, jobs[1]!.job.jobId]);
      expect((await store.findDueOutbox(at(200), 2)).map((d) => d.job.jobId)).toEqual([jobs[2]!.job.jobId, jobs[3]!.job.jobId]);
    });

    test("purgeEndedJobs removes jobs ended before the cutoff with everything of them; open and recent ones stay", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
      const keyed = sampleJob("acme", { now: at(0) });
      keyed.job.idempotencyKey = "early-key";
      const [early, late, open] = [
        await storeJob(store, keyed, claimFor(keyed, "early-key")),
        await storeJob(store, sampleJob("acme", { now: at(1) })),
        await storeJob(store, sampleJob("acme", { now: at(2) })),
      ];
      for (const [stored, endedAt] of [
        [early, at(10)],
        [late, at(100)],
      ] as const) {
        const ended = cancelJob(stored, endedAt)!;
        await store.saveChanges(stored.job.jobId, ended);
      }

      expect(await store.purgeEndedJobs(at(50), 10)).toBe(1);
      expect(await store.getJob(early.job.jobId)).toBeNull();
      expect(await store.getOutboxEntry(early.job.jobId, early.outbox[0]!.outboxId)).toBeNull();
      const listed = (await store.listJobs("acme", { limit: 10, cursor: null })).items.map((i) => i.jobId);
      expect(listed).toEqual([open.job.jobId, late.job.jobId]);
      expect((await store.listOutbox("withdrawn", { limit: 10, cursor: null })).items.map((o) => o.jobId)).toEqual([late.job.jobId]);
      // Nothing more is expired at that cutoff; a later one takes the other ended job, never the open one.
      expect(await store.purgeEndedJobs(at(50), 10)).toBe(0);
      expect(await store.purgeEndedJobs(at(10_000), 10)).toBe(1);
      expect((await store.listJobs("acme", { limit: 10, cursor: null })).items.map((i) => i.jobId)).toEqual([open.job.jobId]);
      expect(await store.getJob(open.job.jobId)).not.toBeNull();
      // Its idempotency key went with it: the same key now starts a new job instead of replaying a removed one.
      const reuse = sampleJob("acme", { now: at(60) });
      expect((await store.createJob(reuse, claimFor(reuse, "early-key"))).outcome).toBe("stored");
    });

    test("history: the created job's entry and each change's entry come back in order after a sequence number; a job keeps the newest MAX_HISTORY_ENTRIES", async () => {
      const store = await makeStore();
      const planned = sampleJob("acme");
      const accepted = acceptedEntry(planned, "client");
      let stored = await storeJob(store, { ...planned, job: accepted.job, history: accepted.entry });
      expect(stored.job.changes).toBe(1);
      const change = (cause: HistoryCause, changes?: number) => {
        const job = changes === undefined ? stored.job : { ...stored.job, changes: changes - 1 };
        return recordChange({ ...stored, job }, { steps: [], outbox: [] }, cause, new Date())!;
      };
      for (const action of ["pause", "resume"] as const) {
        const recorded = change({ action, actor: "ann" });
        stored = { ...stored, job: (await store.saveChanges(stored.job.jobId, { job: recorded.job, history: recorded.entry })).job! };
      }
      const all = await store.getHistory(stored.job.jobId, 0, 10);
      expect(all.map((e) => [e.seq, e.action, e.actor])).toEqual([
        [1, "accepted", "client"],
        [2, "pause", "ann"],
        [3, "resume", "ann"],
      ]);
      expect(all[0]!.dispatched).toEqual([{ step: planned.steps[0]!.name, messageId: planned.outbox[0]!.outboxId, attempt: 1 }]);
      expect((await store.getHistory(stored.job.jobId, 1, 1)).map((e) => e.seq)).toEqual([2]);
      expect(await store.getHistory(newJobId(), 0, 10)).toEqual([]);
      // The entry MAX_HISTORY_ENTRIES after the second takes its place: the oldest go first.
      const far = change({ action: "cancel", actor: "bob" }, 2 + MAX_HISTORY_ENTRIES);
      await store.saveChanges(stored.job.jobId, { job: far.job, history: far.entry });
      expect((await store.getHistory(stored.job.jobId, 0, 10)).map((e) => e.seq)).toEqual([1, 3, 2 + MAX_HISTORY_ENTRIES]);
    });

    test("history: an entry whose job row is stale is not written; the job's removal takes its history", async () => {
      const store = await makeStore();
      const planned = sampleJob("acme");
      const accepted = acceptedEntry(planned, "client");
      const stored = await storeJob(store, { ...planned, job: accepted.job, history: accepted.entry });
      const first = recordChange(stored, { steps: [], outbox: [] }, { action: "pause", actor: "ann" }, new Date())!;
      await store.saveChanges(stored.job.jobId, { job: first.job, history: first.entry });
      const stale = recordChange(stored, { steps: [], outbox: [] }, { action: "cancel", actor: "bob" }, new Date())!;
      await expect(store.saveChanges(stored.job.jobId, { job: stale.job, history: { ...stale.entry, seq: 3 } })).rejects.toBeInstanceOf(
        ConcurrencyConflictError,
      );
      expect((await store.getHistory(stored.job.jobId, 0, 10)).map((e) => e.actor)).toEqual(["client", "ann"]);

      const current = (await store.getJob(stored.job.jobId))!;
      await store.saveChanges(stored.job.jobId, cancelJob(current, new Date("2026-01-01T00:00:00.000Z"))!);
      expect(await store.purgeEndedJobs(new Date("2026-01-02T00:00:00.000Z"), 10)).toBe(1);
      expect(await store.getHistory(stored.job.jobId, 0, 10)).toEqual([]);
    });

    test("purgeEndedJobs takes at most `limit` jobs, oldest first", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const jobs: JobAggregate[] = [];
      for (let i = 0; i < 3; i++) {
        const stored = await storeJob(store, sampleJob("acme", { now: new Date(t0.getTime() + i * 1000) }));
        await store.saveChanges(stored.job.jobId, cancelJob(stored, new Date(t0.getTime() + (10 + i) * 1000))!);
        jobs.push(stored);
      }
      expect(await store.purgeEndedJobs(new Date(t0.getTime() + 60_000), 2)).toBe(2);
      expect(await store.getJob(jobs[0]!.job.jobId)).toBeNull();
      expect(await store.getJob(jobs[1]!.job.jobId)).toBeNull();
      expect(await store.getJob(jobs[2]!.job.jobId)).not.toBeNull();
    });

    test("an idempotency key holds its job within the TTL; an expired one is claimed anew; purgeIdempotencyRecords removes expired records", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
      const first = sampleJob("acme", { now: at(0) });
      await storeJob(store, first, claimFor(first, "k"));
      // Within the TTL (nothing expired before t0 − 1 s): the key is taken by the first job.
      const replay = sampleJob("acme", { now: at(10) });
      const taken = await store.createJob(replay, claimFor(replay, "k"), at(-1));
      expect(taken).toMatchObject({ outcome: "key-taken", existing: { jobId: first.job.jobId } });
      // Past it, the same key starts a new job.
      const later = sampleJob("acme", { now: at(100) });
      expect((await store.createJob(later, claimFor(later, "k"), at(50))).outcome).toBe("stored");
      const again = sampleJob("acme", { now: at(101) });
      expect(await store.createJob(again, claimFor(again, "k"), at(50))).toMatchObject({ outcome: "key-taken", existing: { jobId: later.job.jobId } });

      // Another key, created at t0, expires; "k" was claimed again at +100 and stays.
      const other = sampleJob("acme", { now: at(0) });
      await storeJob(store, other, claimFor(other, "k2"));
      expect(await store.purgeIdempotencyRecords(at(50), 10)).toBe(1);
      const fresh = sampleJob("acme", { now: at(60) });
      expect((await store.createJob(fresh, claimFor(fresh, "k2"))).outcome).toBe("stored");
      const replayK = sampleJob("acme", { now: at(61) });
      expect((await store.createJob(replayK, claimFor(replayK, "k"))).outcome).toBe("key-taken");
    });

    test("findExpiredSteps returns open steps whose deadline passed, earliest first, up to the limit; not ended or superseded ones", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
      // First steps with deadlines at +60, +70, +80, +90, +100.
      const jobs: JobAggregate[] = [];
      for (let i = 0; i < 5; i++) jobs.push(await storeJob(store, sampleJob("acme", { now: at(i * 10), timeoutSeconds: 60 })));
      // One step ended, one deadline moved to +500: neither is expired at +95.
      const [ended, moved] = [jobs[0]!, jobs[1]!];
      await store.saveChanges(ended.job.jobId, {
        job: finishJob(ended.job, "cancelled", at(5).toISOString()),
        steps: [{ ...ended.steps[0]!, status: "cancelled" }],
      });
      await store.saveChanges(moved.job.jobId, { steps: [{ ...moved.steps[0]!, deadlineAt: at(500).toISOString() }] });

      const expired = await store.findExpiredSteps(at(95), 10);
      expect(expired).toEqual([2, 3].map((i) => ({ jobId: jobs[i]!.job.jobId, stepId: jobs[i]!.steps[0]!.stepId, deadlineAt: at(i * 10 + 60).toISOString() })));
      // Finding is not taking: asked again, the same steps come back; the limit holds.
      expect((await store.findExpiredSteps(at(95), 1)).map((e) => e.jobId)).toEqual([jobs[2]!.job.jobId]);
      expect((await store.findExpiredSteps(at(1000), 10)).map((e) => e.jobId)).toEqual([2, 3, 4, 1].map((i) => jobs[i]!.job.jobId));
      expect(await store.findExpiredSteps(at(59), 10)).toEqual([]);
    });

    test("listOutbox pages pending, failed, sent and withdrawn entries; outboxStats counts pending and failed", async () => {
      const store = await makeStore();
      const t0 = new Date("2026-01-01T00:00:00.000Z");
      const jobs = [];
      for (let i = 0; i < 6; i++) jobs.push(await storeJob(store, sampleJob("acme", { now: new Date(t0.getTime() + i * 1000) })));
      const at = new Date(t0.getTime() + 10_000).toISOString();
      // Two sent, one failed, one withdrawn (its job ended), two left pending.
      for (const sent of jobs.slice(0, 2)) {
        const next = applyPublished({ job: sent.job, step: sent.steps[0]!, entry: sent.outbox[0]! }, at);
        await store.saveChanges(sent.job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] });
      }
      await store.saveChanges(jobs[2]!.job.jobId, {
        outbox: [recordPublishFailure(jobs[2]!.outbox[0]!, { error: "gone", retryable: false, now: at, nextAttemptAt: at, maxAttempts: 3 })],
      });

      await store.saveChanges(jobs[5]!.job.jobId, { outbox: [withdrawEntry(jobs[5]!.outbox[0]!, "job ended before this directive was sent", at)] });

      const collect = async (status: "pending" | "failed" | "sent" | "withdrawn") => {
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const page: Awaited<ReturnType<JobStore["listOutbox"]>> = await store.listOutbox(status, { limit: 1, cursor });
          expect(page.items.length).toBeLessThanOrEqual(1);
          expect(page.items.every((entry) => entry.status === status)).toBe(true);
          seen.push(...page.items.map((entry) => entry.outboxId));
          cursor = page.nextCursor;
        } while (cursor);
        return seen.sort();
      };
      expect(await collect("pending")).toEqual([jobs[3]!.outbox[0]!.outboxId, jobs[4]!.outbox[0]!.outboxId].sort());
      expect(await collect("failed")).toEqual([jobs[2]!.outbox[0]!.outboxId]);
      expect(await collect("sent")).toEqual([jobs[0]!.outbox[0]!.outboxId, jobs[1]!.outbox[0]!.outboxId].sort());
      expect(await collect("withdrawn")).toEqual([jobs[5]!.outbox[0]!.outboxId]);
      const stats = await store.outboxStats(new Date(t0.getTime() + 60_000));
      expect(stats).toEqual({ pending: 2, failed: 1, oldestPendingAgeSeconds: 57 });
      expect(await store.outboxStats(new Date(t0.getTime() + 60_000)).then((s) => s.failed)).toBe(1);
    });

    test("outboxStats of an empty store", async () => {
      const store = await makeStore();
      expect(await store.outboxStats(new Date())).toEqual({ pending: 0, failed: 0, oldestPendingAgeSeconds: null });
    });

    test("ping answers while the store is up", async () => {
      const store = await makeStore();
      await store.ping();
    });
  });
}
