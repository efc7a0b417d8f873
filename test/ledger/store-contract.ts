/**
 * The behaviour every LedgerStore promises. Each backend's test file calls
 * `describeStoreContract` with a factory that gives a fresh, empty store.
 */
import { describe, expect, test } from "bun:test";
import { ConcurrencyConflictError } from "../../src/domain/errors.ts";
import { newJobId } from "../../src/domain/ids.ts";
import type { JobAggregate } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { applyPublished, recordPublishFailure } from "../../src/domain/transitions.ts";
import type { LedgerStore } from "../../src/ledger/store.ts";

const protocol = {
  requestType: "document.ingest",
  version: 1,
  description: "",
  steps: [
    { name: "ocr", topic: "ocr-requests", partitionKey: { kind: "jobId" as const } },
    { name: "embed", topic: "vector-ingestion", partitionKey: { kind: "tenantId" as const } },
  ],
};

export function sampleJob(tenantId = "acme", overrides: { jobId?: string; now?: Date } = {}): JobAggregate {
  return planJob({
    jobId: overrides.jobId ?? newJobId(),
    command: { requestType: "document.ingest", tenantId, correlationId: "c", idempotencyKey: null, payload: { documentId: "d1", nested: { list: [1, "two"] } } },
    protocol,
    traceparent: null,
    now: overrides.now ?? new Date(),
    retryDelaySeconds: 30,
  });
}

const withoutEtags = (aggregate: JobAggregate) => ({
  job: { ...aggregate.job, etag: undefined },
  steps: aggregate.steps.map((s) => ({ ...s, etag: undefined })),
  outbox: aggregate.outbox.map((o) => ({ ...o, etag: undefined })),
});

export function describeStoreContract(name: string, makeStore: () => Promise<LedgerStore>) {
  describe(`LedgerStore contract: ${name}`, () => {
    test("createJob stores job, steps and outbox exactly, and getJob returns them with etags", async () => {
      const store = await makeStore();
      const planned = sampleJob();
      const stored = await store.createJob(planned);
      expect(stored.job.etag).toBeString();
      expect(stored.outbox[0]?.etag).toBeString();
      const read = await store.getJob(planned.job.jobId);
      expect(read).not.toBeNull();
      expect(withoutEtags(read!)).toEqual(withoutEtags(planned) as never);
      expect(read!.job.etag).toBe(stored.job.etag!);
    });

    test("getJob of an unknown id is null", async () => {
      const store = await makeStore();
      expect(await store.getJob(newJobId())).toBeNull();
    });

    test("createJob of an existing job id changes nothing and returns what is stored", async () => {
      const store = await makeStore();
      const planned = sampleJob();
      const first = await store.createJob(planned);
      const again = await store.createJob({ ...planned, job: { ...planned.job, correlationId: "other" } });
      expect(again.job.correlationId).toBe("c");
      expect(again.job.etag).toBe(first.job.etag!);
      expect((await store.listJobs("acme", { limit: 10, cursor: null })).items).toHaveLength(1);
    });

    test("claimIdempotencyKey: the first claim wins, later ones see it unchanged; keys are per tenant", async () => {
      const store = await makeStore();
      const record = { tenantId: "acme", key: "k-1", fingerprint: "f1", jobId: "j1", createdAt: new Date().toISOString() };
      expect((await store.claimIdempotencyKey(record)).claimed).toBe(true);
      const second = await store.claimIdempotencyKey({ ...record, fingerprint: "f2", jobId: "j2" });
      expect(second.claimed).toBe(false);
      expect(!second.claimed && [second.existing.fingerprint, second.existing.jobId]).toEqual(["f1", "j1"]);
      expect((await store.claimIdempotencyKey({ ...record, tenantId: "globex" })).claimed).toBe(true);
    });

    test("claimIdempotencyKey: of 20 concurrent claims of one key exactly one wins", async () => {
      const store = await makeStore();
      const claims = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.claimIdempotencyKey({ tenantId: "acme", key: "race", fingerprint: "f", jobId: `j${i}`, createdAt: new Date().toISOString() })),
      );
      expect(claims.filter((c) => c.claimed)).toHaveLength(1);
      const winner = claims.find((c) => c.claimed)!;
      for (const c of claims) if (!c.claimed) expect(c.existing.jobId).toBe(winner.claimed ? winner.record.jobId : "");
    });

    test("listJobs pages a tenant's jobs newest first and only that tenant's", async () => {
      const store = await makeStore();
      const base = Date.now();
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const job = sampleJob("acme", { now: new Date(base + i) });
        ids.push(job.job.jobId);
        await store.createJob(job);
      }
      await store.createJob(sampleJob("globex"));
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: Awaited<ReturnType<LedgerStore["listJobs"]>> = await store.listJobs("acme", { limit: 3, cursor });
        expect(page.items.length).toBeLessThanOrEqual(3);
        seen.push(...page.items.map((item) => item.jobId));
        cursor = page.nextCursor;
      } while (cursor);
      expect(seen).toEqual([...ids].reverse());
      const first = (await store.listJobs("acme", { limit: 1, cursor: null })).items[0];
      expect(first).toEqual({ jobId: ids.at(-1)!, tenantId: "acme", requestType: "document.ingest", correlationId: "c", createdAt: expect.any(String) });
    });

    test("saveChanges writes the published state and returns new etags", async () => {
      const store = await makeStore();
      const { job, steps, outbox } = await store.createJob(sampleJob());
      const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, new Date().toISOString());
      const saved = await store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] });
      expect(saved.job.etag).not.toBe(job.etag!);
      const read = (await store.getJob(job.jobId))!;
      expect([read.job.status, read.steps[0]!.status, read.steps[1]!.status, read.outbox[0]!.status]).toEqual(["in_progress", "initiated", "pending", "sent"]);
      expect(read.outbox[0]!.etag).toBe(saved.outbox[0]!.etag!);
    });

    test("saveChanges with a stale etag is a conflict and writes nothing of the change", async () => {
      const store = await makeStore();
      const { job, steps, outbox } = await store.createJob(sampleJob());
      const now = new Date().toISOString();
      const failed = recordPublishFailure(outbox[0]!, { error: "x", retryable: true, now, nextAttemptAt: now, maxAttempts: 3 });
      await store.saveChanges(job.jobId, { outbox: [failed] });
      // A second writer still holding the old etags of entry and job.
      const next = applyPublished({ job, step: steps[0]!, entry: outbox[0]! }, now);
      await expect(store.saveChanges(job.jobId, { job: next.job, steps: [next.step], outbox: [next.entry] })).rejects.toBeInstanceOf(ConcurrencyConflictError);
      const read = (await store.getJob(job.jobId))!;
      expect([read.job.status, read.steps[0]!.status, read.outbox[0]!.status, read.outbox[0]!.attempts]).toEqual(["accepted", "pending", "pending", 1]);
    });

    test("of two concurrent writers holding the same etag exactly one succeeds", async () => {
      const store = await makeStore();
      const { job, outbox } = await store.createJob(sampleJob());
      const now = new Date().toISOString();
      const attempt = (error: string) =>
        store.saveChanges(job.jobId, { outbox: [recordPublishFailure(outbox[0]!, { error, retryable: true, now, nextAttemptAt: now, maxAttempts: 3 })] });
      const results = await Promise.allSettled([attempt("a"), attempt("b")]);
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      expect(results.filter((r) => r.status === "rejected" && r.reason instanceof ConcurrencyConflictError)).toHaveLength(1);
      expect((await store.getJob(job.jobId))!.outbox[0]!.attempts).toBe(1);
    });

    test("saveChanges can add a new outbox entry (a later step's directive)", async () => {
      const store = await makeStore();
      const { job, outbox } = await store.createJob(sampleJob());
      const { etag: _old, ...template } = outbox[0]!;
      const added = { ...template, outboxId: `${template.outboxId}-2`, status: "pending" as const };
      await store.saveChanges(job.jobId, { outbox: [added] });
      expect((await store.getJob(job.jobId))!.outbox.map((o) => o.outboxId).sort()).toEqual([outbox[0]!.outboxId, added.outboxId].sort());
    });

    test("ping answers while the store is up", async () => {
      const store = await makeStore();
      await store.ping();
    });
  });
}
