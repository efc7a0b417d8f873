/**
 * The jobs this process last wrote or read, kept beside a store whose changes land whole
 * (`ledger`), so that a step event can decide against the job as the dispatch that preceded it
 * left it instead of reading it again: one storage call less per event.
 *
 * A kept copy may be stale (another replica changed the job since). A change decided on it
 * writes the job's row and its own rows on their etags, and carries a fence (JobChanges.fence)
 * on the one kind of row that moves back without the job's row: a failed directive an operator
 * resets to pending (see fenceOf in jobs/job-writer.ts). Any of them moved elsewhere refuses it;
 * the copy is then dropped and the caller decides again against a fresh read (see
 * JobWriter.withRecent).
 * Anything decided from a kept copy that is not a write (an event ignored, a duplicate) is
 * decided again fresh. Map children are never kept (they are read apart, see JobStore.getJob).
 */
import { ConcurrencyConflictError } from "../domain/errors.ts";
import { isChildStepId } from "../domain/ids.ts";
import type { JobAggregate, OutboxEntry, Step } from "../domain/model.ts";
import type { JobChanges, JobStore, SavedChanges } from "./job-store.ts";

/** Jobs kept at most, least recently used dropped first: a few KB each. */
export const DEFAULT_RECENT_JOBS = 2_000;
/** What the kept copies may hold in all (their rows as JSON, two bytes a character); one job at most a sixteenth of it. */
export const DEFAULT_RECENT_JOBS_BYTES = 64 * 1024 * 1024;

export interface RecentJobsOptions {
  capacity?: number;
  maxBytes?: number;
  /**
   * Rows one change may write, its fence and history entry included (Azure's 100 operations of a
   * transaction): a change decided on a copy that would exceed it is refused as a conflict, so
   * that it is decided again fresh, without a fence.
   */
  maxRowsPerChange: number;
}

export function withRecentJobs(store: JobStore, options: RecentJobsOptions): JobStore {
  const capacity = options.capacity ?? DEFAULT_RECENT_JOBS;
  const maxBytes = options.maxBytes ?? DEFAULT_RECENT_JOBS_BYTES;
  const kept = new Map<string, { aggregate: JobAggregate; bytes: number }>();
  let keptBytes = 0;
  /** Changes in flight per job (only jobs with one are here). */
  const writing = new Map<string, Set<Promise<unknown>>>();
  /** Each row's size, measured once: rows are replaced, never changed, so a kept job costs only its new rows. */
  const rowBytes = new WeakMap<object, number>();

  function bytesOf(row: object): number {
    let bytes = rowBytes.get(row);
    if (bytes === undefined) {
      bytes = JSON.stringify(row).length * 2;
      rowBytes.set(row, bytes);
    }
    return bytes;
  }

  function drop(jobId: string): void {
    const entry = kept.get(jobId);
    if (!entry) return;
    keptBytes -= entry.bytes;
    kept.delete(jobId);
  }

  function keep(aggregate: JobAggregate): void {
    const { jobId } = aggregate.job;
    drop(jobId);
    // A job too large to keep is read each time: it would push out many small ones. (Measured
    // only until it is found too large.)
    let bytes = 0;
    for (const row of [aggregate.job, ...aggregate.steps, ...aggregate.outbox]) {
      bytes += bytesOf(row);
      if (bytes > maxBytes / 16) return;
    }
    kept.set(jobId, { aggregate: { job: aggregate.job, steps: aggregate.steps, outbox: aggregate.outbox }, bytes });
    keptBytes += bytes;
    while (kept.size > capacity || keptBytes > maxBytes) drop(kept.keys().next().value!);
  }

  function merged(before: JobAggregate, saved: SavedChanges): JobAggregate {
    const steps = [...saved.steps, ...(saved.fenced?.steps ?? [])];
    const outbox = [...saved.outbox, ...(saved.fenced?.outbox ?? [])];
    return {
      job: saved.job ?? before.job,
      steps: replaced(before.steps, steps, (s) => s.stepId).sort((a, b) => a.index - b.index),
      outbox: replaced(before.outbox, outbox, (o) => o.outboxId),
    };
  }

  function rowsOf(changes: JobChanges): number {
    const fence = changes.fence ? changes.fence.steps.length + changes.fence.outbox.length : 0;
    return (changes.job ? 1 : 0) + (changes.steps?.length ?? 0) + (changes.outbox?.length ?? 0) + (changes.history ? 1 : 0) + fence;
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
      else drop(jobId);
      return aggregate;
    },

    async saveChanges(jobId, changes) {
      if (changes.fence && rowsOf(changes) > options.maxRowsPerChange) {
        drop(jobId);
        throw new ConcurrencyConflictError(`a change of job ${jobId} with its fence exceeds ${options.maxRowsPerChange} rows: decide it fresh`);
      }
      const saving = store.saveChanges(jobId, changes);
      const inFlight = writing.get(jobId) ?? new Set<Promise<unknown>>();
      writing.set(jobId, inFlight);
      inFlight.add(saving);
      try {
        const saved = await saving;
        const before = kept.get(jobId)?.aggregate;
        if (before) keep(merged(before, saved));
        return saved;
      } catch (error) {
        drop(jobId);
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
      return kept.get(jobId)?.aggregate ?? null;
    },

    forgetJob: drop,
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
