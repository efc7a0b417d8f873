/**
 * In-process backend: nothing survives a restart. Stored entities are frozen (the payload
 * deeply, after a copy), so they are handed out without copies and still never change except
 * through saveChanges. (structuredClone in and out cost half of the intake's CPU time.)
 */
import { ConcurrencyConflictError, StorageFullError } from "../../domain/errors.ts";
import { historySlot } from "../../domain/history.ts";
import { isChildStepId, jobIdOfStep, stepIdFor } from "../../domain/ids.ts";
import type {
  HistoryEntry,
  IdempotencyRecord,
  Job,
  JobAggregate,
  JobFilter,
  JobSummary,
  OutboxEntry,
  OutboxWork,
  Page,
  Step,
  Versioned,
} from "../../domain/model.ts";
import { hasJobEnded, hasStepEnded } from "../../domain/transitions.ts";
import { encodeCursor, readCursor } from "../cursor.ts";
import { matchesFilter } from "../job-filter.ts";
import type { CreateJobResult, ExpiredStep, JobChanges, JobStore, PageRequest, SavedChanges } from "../job-store.ts";
import { DueHeap, type DueNode } from "./due-heap.ts";

export interface MemoryStoreOptions {
  /**
   * Jobs kept at most (LUCIUS_MEMORY_MAX_JOBS): past it the oldest ended jobs are evicted, and
   * when every job is open a new one is refused with StorageFullError.
   */
  maxJobs?: number;
}

/** How long a caller refused for a full store should wait: a few deadline or retry sweeps. */
const FULL_RETRY_AFTER_SECONDS = 5;

export function createMemoryStore(options: MemoryStoreOptions = {}): JobStore {
  const maxJobs = options.maxJobs ?? Number.POSITIVE_INFINITY;
  let version = 0;
  const nextEtag = () => `W/"${++version}"`;
  const jobs = new Map<string, JobAggregate>();
  const idempotency = new Map<string, IdempotencyRecord>();
  /** tenantId → job ids, ascending (ids are time-ordered). */
  const jobIndex = new Map<string, string[]>();
  /** outboxId → jobId of every pending and every failed entry: what sweeps and operators look through. */
  const pending = new Map<string, string>();
  const failed = new Map<string, string>();
  /** jobId → its history, oldest first, the newest MAX_HISTORY_ENTRIES (one per slot). */
  const histories = new Map<string, HistoryEntry[]>();
  function record(jobId: string, entry: HistoryEntry | undefined): void {
    if (!entry) return;
    // As on Azure: an entry takes its slot (domain/history.ts), over the one MAX_HISTORY_ENTRIES older.
    const entries = (histories.get(jobId) ?? []).filter((e) => historySlot(e.seq) !== historySlot(entry.seq));
    entries.push(deepFreeze(jsonCopy(entry)));
    histories.set(jobId, entries);
  }

  const stamp = <T extends Versioned>(entity: T): T => Object.freeze({ ...entity, etag: nextEtag() });
  // A job's map children are read on their own (getChildren, listChildren), as the Azure backends do.
  const view = (aggregate: JobAggregate): JobAggregate => ({
    job: aggregate.job,
    steps: aggregate.steps.filter((s) => !isChildStepId(s.stepId)),
    outbox: aggregate.outbox.filter((o) => !isChildStepId(o.stepId)),
  });

  /** Where `id` is or would go in the ascending `ids`. */
  function lowerBound(ids: string[], id: string): number {
    let low = 0;
    let high = ids.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (ids[mid]! < id) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  function insertSorted(ids: string[], id: string): void {
    const at = lowerBound(ids, id);
    if (ids[at] !== id) ids.splice(at, 0, id);
  }

  function sortedIndexOf(ids: string[], id: string): number {
    const at = lowerBound(ids, id);
    return ids[at] === id ? at : -1;
  }

  /** outboxId → jobId of every entry, in creation order: the `sent` listing. */
  const allEntries = new Map<string, string>();

  /** Pending entries by due time (see DueHeap); superseded nodes are dropped when met. */
  const dueHeap = new DueHeap({
    isLive: (node) => {
      const jobId = pending.get(node.key);
      return jobId !== undefined && entryOf(node.key, jobId)?.nextAttemptAt === node.dueAt;
    },
    liveCount: () => pending.size,
  });
  /** Open steps by deadline, keyed by step id; superseded nodes and ended steps are dropped when met. */
  const deadlineHeap = new DueHeap({
    isLive: (node) => {
      const jobId = jobIdOfStep(node.key);
      const step = jobId === null ? undefined : jobs.get(jobId)?.steps.find((s) => s.stepId === node.key);
      return step !== undefined && !hasStepEnded(step) && step.deadlineAt === node.dueAt;
    },
    // Steps run one after another: a job has at most one open step with a deadline.
    liveCount: () => jobs.size,
  });

  /** Idempotency records by creation time: what the TTL removes. */
  const keysHeap = new DueHeap({ isLive: (node) => idempotency.get(node.key)?.createdAt === node.dueAt, liveCount: () => idempotency.size });
  /** Ended jobs by the time they ended (their updatedAt then): what retention and eviction remove. */
  const endedHeap = new DueHeap({
    isLive: (node) => {
      const job = jobs.get(node.key)?.job;
      return job !== undefined && hasJobEnded(job) && job.updatedAt === node.dueAt;
    },
    liveCount: () => jobs.size,
  });

  function noteEnded(job: Job): void {
    if (hasJobEnded(job)) endedHeap.push({ dueAt: job.updatedAt, key: job.jobId });
  }

  /** Removes a job and every trace of it: entries in the outbox indexes, its listing row, its idempotency record. */
  function removeJob(jobId: string): void {
    const stored = jobs.get(jobId);
    if (!stored) return;
    jobs.delete(jobId);
    histories.delete(jobId);
    // Its key goes with it: a replay must not bring a removed job back.
    const { tenantId, idempotencyKey } = stored.job;
    const keyOf = idempotencyKey === null ? null : `${tenantId}\u0000${idempotencyKey}`;
    if (keyOf !== null && idempotency.get(keyOf)?.jobId === jobId) idempotency.delete(keyOf);
    for (const entry of stored.outbox) {
      allEntries.delete(entry.outboxId);
      pending.delete(entry.outboxId);
      failed.delete(entry.outboxId);
    }
    const ids = jobIndex.get(stored.job.tenantId);
    if (ids) {
      const at = sortedIndexOf(ids, jobId);
      if (at >= 0) ids.splice(at, 1);
      if (ids.length === 0) jobIndex.delete(stored.job.tenantId);
    }
  }

  /** The next ended job in the heap that still is what its node says, removed from the heap. */
  function takeEnded(endedBefore: string | null): string | null {
    for (let node = endedHeap.peek(); node && (endedBefore === null || node.dueAt < endedBefore); node = endedHeap.peek()) {
      endedHeap.pop();
      const job = jobs.get(node.key)?.job;
      if (job && hasJobEnded(job) && job.updatedAt === node.dueAt) return node.key;
    }
    return null;
  }

  /** Room for one more job: evicts the oldest ended job when at the bound, refuses when all are open. */
  function makeRoom(): void {
    if (jobs.size < maxJobs) return;
    const evicted = takeEnded(null);
    if (evicted === null) {
      throw new StorageFullError(`the memory backend holds ${maxJobs} open jobs (LUCIUS_MEMORY_MAX_JOBS); retry when some have ended`, {
        retryAfterSeconds: FULL_RETRY_AFTER_SECONDS,
      });
    }
    removeJob(evicted);
  }

  function watchDeadlines(steps: readonly Step[]): void {
    for (const step of steps) if (step.deadlineAt !== null && !hasStepEnded(step)) deadlineHeap.push({ dueAt: step.deadlineAt, key: step.stepId });
  }

  function track(jobId: string, entries: readonly OutboxEntry[]): void {
    for (const entry of entries) {
      allEntries.set(entry.outboxId, jobId);
      if (entry.status === "pending" && entry.nextAttemptAt !== null) dueHeap.push({ dueAt: entry.nextAttemptAt, key: entry.outboxId });
      for (const [status, index] of [
        ["pending", pending],
        ["failed", failed],
      ] as const) {
        if (entry.status === status) index.set(entry.outboxId, jobId);
        else index.delete(entry.outboxId);
      }
    }
  }

  function entryOf(outboxId: string, jobId: string) {
    return jobs.get(jobId)?.outbox.find((o) => o.outboxId === outboxId);
  }

  function assertCurrent(stored: Versioned | undefined, given: Versioned, what: string): void {
    if (!stored || stored.etag !== given.etag) throw new ConcurrencyConflictError(`${what} was changed by another writer`);
  }

  return {
    async init() {},

    async createJob(aggregate, claim, keysExpireBefore): Promise<CreateJobResult> {
      const existing = jobs.get(aggregate.job.jobId);
      const key = claim === null ? null : `${claim.tenantId}\u0000${claim.key}`;
      if (claim && key !== null) {
        const taken = idempotency.get(key);
        const expired = taken !== undefined && keysExpireBefore !== undefined && taken.createdAt < keysExpireBefore.toISOString();
        // A replay is answered even when the store is full: it creates nothing. The key held by
        // this very job (a create retried) is not another request's.
        if (taken && !expired && taken.jobId !== aggregate.job.jobId) return { outcome: "key-taken", existing: taken };
      }
      if (!existing) makeRoom();
      if (claim && key !== null && idempotency.get(key)?.jobId !== aggregate.job.jobId) {
        idempotency.set(key, stamp(claim));
        keysHeap.push({ dueAt: claim.createdAt, key });
      }
      if (existing) return { outcome: "stored", aggregate: view(existing) };
      const stored: JobAggregate = {
        job: stamp({ ...aggregate.job, payload: deepFreeze(jsonCopy(aggregate.job.payload)) }),
        steps: aggregate.steps.map(stamp),
        outbox: aggregate.outbox.map(stamp),
      };
      jobs.set(stored.job.jobId, stored);
      // A job can end as it starts (every step skipped): retention finds it like any other.
      noteEnded(stored.job);
      record(stored.job.jobId, aggregate.history);
      track(stored.job.jobId, stored.outbox);
      watchDeadlines(stored.steps);
      const ids = jobIndex.get(stored.job.tenantId) ?? [];
      insertSorted(ids, stored.job.jobId);
      jobIndex.set(stored.job.tenantId, ids);
      // As written, children included (what the Azure backends answer too).
      return { outcome: "stored", aggregate: { job: stored.job, steps: [...stored.steps], outbox: [...stored.outbox] } };
    },

    async getChildren(jobId, stepIds) {
      const stored = jobs.get(jobId);
      const wanted = new Set(stepIds);
      return {
        steps: stored?.steps.filter((s) => wanted.has(s.stepId)) ?? [],
        outbox: stored?.outbox.filter((o) => wanted.has(o.stepId)) ?? [],
      };
    },

    async listChildren(jobId, stepIndex, from, limit, open = false) {
      const prefix = `${stepIdFor(jobId, stepIndex)}.i`;
      return (jobs.get(jobId)?.steps ?? [])
        .filter((s) => s.stepId.startsWith(prefix) && (s.itemIndex ?? 0) >= from && (!open || s.status === "pending" || s.status === "initiated"))
        .sort((a, b) => (a.itemIndex ?? 0) - (b.itemIndex ?? 0))
        .slice(0, limit);
    },

    async getOutboxEntry(jobId, outboxId) {
      return entryOf(outboxId, jobId) ?? null;
    },

    async getHistory(jobId, after, limit) {
      return (histories.get(jobId) ?? []).filter((e) => e.seq > after).slice(0, limit);
    },

    async getJob(jobId) {
      const stored = jobs.get(jobId);
      return stored ? view(stored) : null;
    },

    async listJobs(tenantId, page: PageRequest, filter: JobFilter = {}): Promise<Page<JobSummary>> {
      const ids = jobIndex.get(tenantId) ?? [];
      const after = page.cursor === null ? null : readCursor(page.cursor);
      // One match more than the page holds says whether another page follows (as on Azure).
      const found: Job[] = [];
      for (let i = after === null ? ids.length - 1 : ids.findLastIndex((id) => id < after); i >= 0 && found.length <= page.limit; i--) {
        const { job } = jobs.get(ids[i]!)!;
        if (matchesFilter(job, filter)) found.push(job);
      }
      const items = found.slice(0, page.limit).map(summaryOf);
      return { items, nextCursor: found.length > page.limit ? encodeCursor(items.at(-1)!.jobId) : null };
    },

    async saveChanges(jobId, changes: JobChanges) {
      const stored = jobs.get(jobId);
      if (!stored) throw new ConcurrencyConflictError(`job ${jobId} does not exist`);
      // Check every condition before writing anything: all or nothing, like a ledger transaction.
      if (changes.job) assertCurrent(stored.job, changes.job, `job ${jobId}`);
      const stepAt = (changes.steps ?? []).map((step) => {
        const index = stored.steps.findIndex((s) => s.stepId === step.stepId);
        // A map step's child is inserted when it is dispatched.
        if (step.etag === undefined && isChildStepId(step.stepId)) {
          if (index >= 0) throw new ConcurrencyConflictError(`step ${step.stepId} exists already`);
          return -1;
        }
        assertCurrent(stored.steps[index], step, `step ${step.stepId}`);
        return index;
      });
      const outboxAt = (changes.outbox ?? []).map((entry) => {
        const index = stored.outbox.findIndex((o) => o.outboxId === entry.outboxId);
        if (entry.etag === undefined) {
          if (index >= 0) throw new ConcurrencyConflictError(`outbox entry ${entry.outboxId} exists already`);
          return -1;
        }
        assertCurrent(stored.outbox[index], entry, `outbox entry ${entry.outboxId}`);
        return index;
      });
      for (const step of changes.fence?.steps ?? [])
        assertCurrent(
          stored.steps.find((s) => s.stepId === step.stepId),
          step,
          `step ${step.stepId}`,
        );
      for (const entry of changes.fence?.outbox ?? [])
        assertCurrent(
          stored.outbox.find((o) => o.outboxId === entry.outboxId),
          entry,
          `outbox entry ${entry.outboxId}`,
        );
      const saved: SavedChanges = { steps: [], outbox: [], ...(changes.fence ? { fenced: changes.fence } : {}) };
      if (changes.job) {
        saved.job = stored.job = stamp(changes.job);
        noteEnded(saved.job);
      }
      (changes.steps ?? []).forEach((step, i) => {
        const fresh = stamp(step);
        if (stepAt[i]! < 0) stored.steps.push(fresh);
        else stored.steps[stepAt[i]!] = fresh;
        saved.steps.push(fresh);
      });
      (changes.outbox ?? []).forEach((entry, i) => {
        const fresh = stamp(entry);
        if (outboxAt[i]! < 0) stored.outbox.push(fresh);
        else stored.outbox[outboxAt[i]!] = fresh;
        saved.outbox.push(fresh);
      });
      record(jobId, changes.history);
      track(jobId, saved.outbox);
      watchDeadlines(saved.steps);
      return saved;
    },

    async findDueOutbox(now, limit, options = {}) {
      const cutoff = now.toISOString();
      const due: OutboxWork[] = [];
      const taken: DueNode[] = [];
      const seen = new Set<string>();
      for (let node = dueHeap.peek(); node && node.dueAt <= cutoff && due.length < limit; node = dueHeap.peek()) {
        dueHeap.pop();
        const jobId = pending.get(node.key);
        const aggregate = jobId === undefined ? undefined : jobs.get(jobId);
        const entry = aggregate?.outbox.find((o) => o.outboxId === node!.key);
        // A node superseded by a later write (or of an entry no longer pending) is dropped here.
        if (!aggregate || !entry || entry.nextAttemptAt !== node.dueAt || seen.has(node.key)) continue;
        seen.add(node.key);
        taken.push(node);
        if (options.skip?.has(node.key)) continue;
        const step = aggregate.steps.find((s) => s.stepId === entry.stepId);
        if (step) due.push({ job: aggregate.job, step, entry });
      }
      // Finding is not taking: what was found stays in the index until written again.
      for (const node of taken) dueHeap.push(node);
      return due;
    },

    async findExpiredSteps(now, limit) {
      const cutoff = now.toISOString();
      const expired: ExpiredStep[] = [];
      const taken: DueNode[] = [];
      const seen = new Set<string>();
      for (let node = deadlineHeap.peek(); node && node.dueAt <= cutoff && expired.length < limit; node = deadlineHeap.peek()) {
        deadlineHeap.pop();
        const jobId = jobIdOfStep(node.key);
        const aggregate = jobId === null ? undefined : jobs.get(jobId);
        const step = aggregate?.steps.find((s) => s.stepId === node!.key);
        // A failed job's open step is its compensation step (the rest was cancelled): it still runs.
        const over = hasJobEnded(aggregate?.job ?? { status: "succeeded" }) && aggregate?.job.status !== "failed";
        if (!aggregate || !step || over || hasStepEnded(step) || step.deadlineAt !== node.dueAt) continue;
        if (seen.has(node.key)) continue;
        seen.add(node.key);
        taken.push(node);
        expired.push({ jobId: aggregate.job.jobId, stepId: step.stepId, deadlineAt: node.dueAt });
      }
      for (const node of taken) deadlineHeap.push(node);
      return expired;
    },

    async listOutbox(status, page) {
      const index = status === "pending" ? pending : status === "failed" ? failed : allEntries;
      const ids = [...index.keys()].sort();
      let start = 0;
      if (page.cursor !== null) {
        const after = readCursor(page.cursor);
        start = ids.findIndex((id) => id > after);
        if (start < 0) start = ids.length;
      }
      const items: OutboxEntry[] = [];
      let i = start;
      for (; i < ids.length && items.length < page.limit; i++) {
        const entry = entryOf(ids[i]!, index.get(ids[i]!)!);
        if (entry && entry.status === status) items.push(entry);
      }
      return { items, nextCursor: i < ids.length && items.length > 0 ? encodeCursor(items.at(-1)!.outboxId) : null };
    },

    async outboxStats(now) {
      let oldest: string | null = null;
      for (const [outboxId, jobId] of pending) {
        const createdAt = entryOf(outboxId, jobId)!.createdAt;
        if (oldest === null || createdAt < oldest) oldest = createdAt;
      }
      return {
        pending: pending.size,
        failed: failed.size,
        oldestPendingAgeSeconds: oldest === null ? null : Math.max(0, (now.getTime() - Date.parse(oldest)) / 1000),
      };
    },

    async purgeEndedJobs(endedBefore, limit) {
      const cutoff = endedBefore.toISOString();
      let removed = 0;
      for (let jobId = takeEnded(cutoff); jobId !== null; jobId = removed < limit ? takeEnded(cutoff) : null) {
        removeJob(jobId);
        removed++;
      }
      return removed;
    },

    async listEndedJobs(range, page) {
      // Memory holds at most LUCIUS_MEMORY_MAX_JOBS: a pass over them stands in for an index.
      const after = page.cursor === null ? "" : readCursor(page.cursor);
      const ended = [...jobs.values()]
        .filter(({ job }) => hasJobEnded(job) && job.updatedAt >= range.from && job.updatedAt < range.to)
        .map(({ job }) => ({ key: `${job.updatedAt}_${job.jobId}`, jobId: job.jobId, endedAt: job.updatedAt }))
        .filter((e) => e.key > after)
        .sort((a, b) => a.key.localeCompare(b.key));
      const items = ended.slice(0, page.limit);
      return {
        items: items.map(({ jobId, endedAt }) => ({ jobId, endedAt })),
        nextCursor: ended.length > page.limit ? encodeCursor(items.at(-1)!.key) : null,
      };
    },

    async purgeIdempotencyRecords(createdBefore, limit) {
      const cutoff = createdBefore.toISOString();
      let removed = 0;
      for (let node = keysHeap.peek(); node && node.dueAt < cutoff && removed < limit; node = keysHeap.peek()) {
        keysHeap.pop();
        // A node of a record claimed again since is superseded: the record stays.
        if (idempotency.get(node.key)?.createdAt !== node.dueAt) continue;
        idempotency.delete(node.key);
        removed++;
      }
      return removed;
    },

    async ping() {},
    async close() {},
  };
}

function summaryOf(job: Job): JobSummary {
  const { jobId, tenantId, requestType, correlationId, status, paused, createdAt, updatedAt } = job;
  return { jobId, tenantId, requestType, correlationId, status, paused, createdAt, updatedAt };
}

/** The payload arrived as parsed JSON: a JSON round trip is an exact, fast deep copy of it. */
function jsonCopy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
}
