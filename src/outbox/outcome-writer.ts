/**
 * Stores what a publish did to an entry: sent (step initiated, job in progress) or a failed
 * attempt with its next due time. A lost conditional write re-reads the job and applies the
 * outcome again, a few times, before leaving the entry to the sweeper.
 */

import { ConcurrencyConflictError, InvalidTransitionError } from "../domain/errors.ts";
import { isChildStepId } from "../domain/ids.ts";
import type { OutboxEntry, OutboxWork } from "../domain/model.ts";
import { applyPublished, markOutboxSent, recordPublishFailure } from "../domain/transitions.ts";
import type { JobStore } from "../storage/job-store.ts";
import { backoffSeconds } from "./backoff.ts";
import type { PublishOutcome } from "./publisher.ts";

/** Retry delays stop growing here. */
const BACKOFF_CAP_SECONDS = 15 * 60;
/** Re-reads after a lost conditional write before giving the entry to the sweeper. */
const SAVE_ATTEMPTS = 3;

export interface OutcomeWriterOptions {
  store: JobStore;
  retryDelaySeconds: number;
  maxAttempts: number;
  /** LUCIUS_WEBHOOK_MAX_ATTEMPTS: delivery attempts of a webhook before it is parked `failed`. */
  webhookMaxAttempts?: number;
  now: () => Date;
  random?: () => number;
}

export type OutcomeWriter = (item: OutboxWork, outcome: PublishOutcome) => Promise<OutboxEntry>;

export function createOutcomeWriter(options: OutcomeWriterOptions): OutcomeWriter {
  const { store } = options;

  async function write(item: OutboxWork, outcome: PublishOutcome, at: Date): Promise<OutboxEntry> {
    const stamp = at.toISOString();
    if (outcome.ok && item.entry.webhook) {
      // A delivery reports a change: it starts nothing.
      return (await store.saveChanges(item.job.jobId, { outbox: [markOutboxSent(item.entry, stamp)] })).outbox[0]!;
    }
    if (outcome.ok) {
      const next = applyPublished(item, stamp);
      const saved = await store.saveChanges(item.job.jobId, {
        ...(next.job !== item.job ? { job: next.job } : {}),
        ...(next.step !== item.step ? { steps: [next.step] } : {}),
        outbox: [next.entry],
      });
      return saved.outbox[0]!;
    }
    const backoff = backoffSeconds(item.entry.attempts + 1, {
      baseSeconds: options.retryDelaySeconds,
      capSeconds: BACKOFF_CAP_SECONDS,
      ...(options.random ? { random: options.random } : {}),
    });
    // A receiver's Retry-After is honoured (within the cap): it knows when it can take more.
    const delay = Math.max(backoff, Math.min(BACKOFF_CAP_SECONDS, outcome.retryAfterSeconds ?? 0));
    const failed = recordPublishFailure(item.entry, {
      error: outcome.error,
      retryable: outcome.retryable,
      now: stamp,
      nextAttemptAt: new Date(at.getTime() + delay * 1000).toISOString(),
      maxAttempts: item.entry.webhook ? (options.webhookMaxAttempts ?? options.maxAttempts) : options.maxAttempts,
    });
    const saved = await store.saveChanges(item.job.jobId, { outbox: [failed] });
    return saved.outbox[0]!;
  }

  /**
   * The entry as stored now, or null when it is gone; throws when someone else settled it, except
   * that an entry found sent after a successful publish is answered as it is (its worker answered
   * first, and that event's change marked it: see applyStepEvent).
   */
  async function reload(item: OutboxWork, outcome: PublishOutcome): Promise<OutboxWork | OutboxEntry | null> {
    const { jobId } = item.job;
    // A map step's child is read apart from its job (see JobStore.getJob).
    const [aggregate, child] = await Promise.all([
      store.getJob(jobId),
      isChildStepId(item.step.stepId) ? store.getChildren(jobId, [item.step.stepId]) : Promise.resolve(null),
    ]);
    const steps = child ? child.steps : aggregate?.steps;
    const entries = child ? child.outbox : aggregate?.outbox;
    const step = steps?.find((s) => s.stepId === item.step.stepId);
    const entry = entries?.find((o) => o.outboxId === item.entry.outboxId);
    if (!aggregate || !step || !entry) return null;
    if (outcome.ok && entry.status === "sent") return entry;
    // A sweeper or an admin retry already settled this entry.
    if (entry.status !== "pending") throw new InvalidTransitionError(`outbox entry ${entry.outboxId} is already ${entry.status}`);
    return { job: aggregate.job, step, entry };
  }

  return async (item, outcome) => {
    let current = item;
    for (let attempt = 1; ; attempt++) {
      try {
        return await write(current, outcome, options.now());
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError) || attempt >= SAVE_ATTEMPTS) throw error;
        const reloaded = await reload(current, outcome);
        if (!reloaded) throw error;
        if (!("entry" in reloaded)) return reloaded;
        current = reloaded;
      }
    }
  };
}
