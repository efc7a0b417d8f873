/**
 * The jobs this process last wrote or read, kept beside a store whose changes land whole
 * (`ledger`), so that a step event can decide against the job as the dispatch that preceded it
 * left it instead of reading it again: one storage call less per event.
 *
 * A kept copy may be stale (another replica changed the job since). That is safe only for a
 * change that writes the job's row conditionally on the kept ETag: every change that decides
 * anything writes that row (its history entry), so a stale copy loses the write, is dropped, and
 * the caller decides again against a fresh read (see JobWriter.withRecent). Anything decided
 * from a kept copy that is not a write (an event ignored, a duplicate) is decided again fresh.
 * Map children are never kept (they are read apart, see JobStore.getJob).
 */
import { isChildStepId } from "../domain/ids.ts";
import type { JobAggregate, OutboxEntry, Step } from "../domain/model.ts";
import type { JobStore, SavedChanges } from "./job-store.ts";

/** Jobs kept at most, least recently used dropped first: a few KB each. */
export const DEFAULT_RECENT_JOBS = 2_000;

export interface RecentJobsOptions {
  capacity?: number;
}

export function withRecentJobs(store: JobStore, options: RecentJobsOptions = {}): JobStore {
  const capacity = options.capacity ?? DEFAULT_RECENT_JOBS;
  const kept = new Map<string, JobAggregate>();
  /** Changes in flight per job (only jobs with one are here). */
  const writing = new Map<string, Set<Promise<unknown>>>();

  function keep(aggregate: JobAggregate): void {
    const { jobId } = aggregate.job;
    kept.delete(jobId);
    kept.set(jobId, { job: aggregate.job, steps: aggregate.steps, outbox: aggregate.outbox });
    if (kept.size > capacity) kept.delete(kept.keys().next().value!);
  }

  function merged(before: JobAggregate, saved: SavedChanges): JobAggregate {
    return {
      job: saved.job ?? before.job,
      steps: replaced(before.steps, saved.steps, (s) => s.stepId).sort((a, b) => a.index - b.index),
      outbox: replaced(before.outbox, saved.outbox, (o) => o.outboxId),
    };
  }

  return {
    ...store,

    async createJob(aggregate, claim, keysExpireBefore) {
      const result = await store.createJob(aggregate, claim, keysExpireBefore);
      if (result.outcome === "stored") keep(result.aggregate);
      return result;
    },

    async getJob(jobId) {
      const aggregate = await store.getJob(jobId);
      if (aggregate) keep(aggregate);
      else kept.delete(jobId);
      return aggregate;
    },

    async saveChanges(jobId, changes) {
      const saving = store.saveChanges(jobId, changes);
      const inFlight = writing.get(jobId) ?? new Set<Promise<unknown>>();
      writing.set(jobId, inFlight);
      inFlight.add(saving);
      try {
        const saved = await saving;
        const before = kept.get(jobId);
        if (before) keep(merged(before, saved));
        return saved;
      } catch (error) {
        kept.delete(jobId);
        throw error;
      } finally {
        inFlight.delete(saving);
        if (inFlight.size === 0) writing.delete(jobId);
      }
    },

    async settled(jobId) {
      const inFlight = writing.get(jobId);
      if (!inFlight) return;
      await Promise.allSettled([...inFlight]);
      // A macrotask later: the writers' own continuations (a dispatch, the note of an answered
      // directive) have run by then.
      await new Promise((resolve) => setTimeout(resolve, 0));
    },

    recentJob(jobId) {
      return kept.get(jobId) ?? null;
    },

    forgetJob(jobId) {
      kept.delete(jobId);
    },
  };
}

/** `rows` with those of `written` that are not a map's children put in (by id), new ones appended. */
function replaced<T extends Step | OutboxEntry>(rows: readonly T[], written: readonly T[], idOf: (row: T) => string): T[] {
  const own = written.filter((row) => !isChildStepId(row.stepId));
  if (own.length === 0) return [...rows];
  const byId = new Map(own.map((row) => [idOf(row), row]));
  const out = rows.map((row) => {
    const next = byId.get(idOf(row));
    byId.delete(idOf(row));
    return next ?? row;
  });
  return [...out, ...byId.values()];
}
