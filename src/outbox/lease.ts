/**
 * Leasing due entries before publishing them: a conditional write (on the entry's etag) that moves
 * the entry's due time to the end of the lease and stamps a token. Of several sweepers racing for
 * an entry one wins; the others skip it. A holder that dies leaves a lease that simply runs out.
 */
import { randomUUID } from "node:crypto";
import { ConcurrencyConflictError, InvalidTransitionError } from "../domain/errors.ts";
import { isChildStepId } from "../domain/ids.ts";
import type { OutboxEntry, OutboxWork } from "../domain/model.ts";
import { hasJobEnded, leaseEntry, withdrawEntry } from "../domain/transitions.ts";
import type { JobStore } from "../storage/job-store.ts";
import type { Dispatcher } from "./dispatcher.ts";

/** Lease writes in flight at once per sweep: enough to hide a storage round trip, few enough not to flood it. */
const LEASE_CONCURRENCY = 32;

export interface PublishSummary {
  attempted: number;
  sent: number;
  failed: number;
}

export interface LeaseOptions {
  store: JobStore;
  /** How long a lease keeps other sweepers away; a dead holder's lease simply runs out. */
  leaseSeconds: number;
  now: Date;
}

/** An entry under a lease that has not run out: someone is publishing it. */
export function isHeld(entry: OutboxEntry, now: string): boolean {
  return entry.lease !== null && entry.nextAttemptAt !== null && entry.nextAttemptAt > now;
}

/**
 * Leases what it can of `items`; what another sweeper holds (or settled) is left out. An entry
 * still held is never taken, even when asked for entries "whatever their due time".
 */
export async function leaseEntries(items: readonly OutboxWork[], options: LeaseOptions): Promise<OutboxWork[]> {
  const now = options.now.toISOString();
  items = items.filter((work) => !isHeld(work.entry, now));
  const until = new Date(options.now.getTime() + options.leaseSeconds * 1000).toISOString();
  // Tells this sweep's leases from another replica's written in the same millisecond.
  const token = randomUUID();
  const leased = await mapBounded(items, LEASE_CONCURRENCY, async (work): Promise<OutboxWork | null> => {
    if (await withdrawnAsOrphan(work, options.store, now)) return null;
    if (options.store.leaseDueMarker && !(await options.store.leaseDueMarker(work.entry, { now: options.now, until: new Date(until), token }))) return null;
    const lease = leaseEntry(work.entry, now, until, token);
    try {
      const saved = await options.store.saveChanges(work.job.jobId, { outbox: [lease] });
      return { ...work, entry: saved.outbox[0]! };
    } catch (error) {
      if (error instanceof InvalidTransitionError) return null;
      if (!(error instanceof ConcurrencyConflictError)) throw error;
      // A write whose answer was lost (a timeout, then the SDK's retry meets our own new
      // etag) is ours all the same: left alone, the entry would wait out the whole lease.
      const current = await options.store.getOutboxEntry(work.job.jobId, work.entry.outboxId);
      const ours = current?.status === "pending" && current.lease === token;
      return ours ? { ...work, entry: current } : null;
    }
  });
  return leased.filter((work): work is OutboxWork => work !== null);
}

/**
 * A map child's directive left pending when its job ended (the job's end withdraws them after
 * its own change; a crash between the two leaves some) is withdrawn, never published: true when
 * `work` is one (withdrawn now, or left for the next sweep if that write fails).
 */
export async function withdrawnAsOrphan(work: OutboxWork, store: JobStore, now: string): Promise<boolean> {
  if (!hasJobEnded(work.job) || !isChildStepId(work.entry.stepId)) return false;
  await store.saveChanges(work.job.jobId, { outbox: [withdrawEntry(work.entry, "job ended before this directive was sent", now)] }).catch(() => {});
  return true;
}

/** Counts what publishing the leased entries did. */
export function summarize(outcomes: readonly (OutboxEntry | null)[]): PublishSummary {
  const sent = outcomes.filter((entry) => entry?.status === "sent").length;
  return { attempted: outcomes.length, sent, failed: outcomes.length - sent };
}

/** Leases, publishes what it leased (the operator's path), and counts the outcomes. */
export async function leaseAndPublish(items: OutboxWork[], options: LeaseOptions & { dispatcher: Dispatcher }): Promise<PublishSummary> {
  const mine = await leaseEntries(items, options);
  return summarize(mine.length > 0 ? await options.dispatcher.publishNow(mine) : []);
}

/** `fn` over `items` with at most `limit` calls running at once; results in order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
