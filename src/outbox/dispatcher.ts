/**
 * The fast path (DESIGN.md §8): directives handed over after the 202 are published per topic in
 * batches, then marked sent (step initiated, job in progress) or recorded as a failed attempt.
 * While one publish of a topic is in flight, the next batch gathers, so load grows batches
 * instead of concurrent calls.
 */
import { ConcurrencyConflictError, InvalidTransitionError } from "../domain/errors.ts";
import type { OutboxEntry, OutboxWork } from "../domain/model.ts";
import { applyPublished, recordPublishFailure } from "../domain/transitions.ts";
import type { JobStore } from "../storage/job-store.ts";
import type { Logger } from "../logging/logger.ts";
import { backoffSeconds } from "./backoff.ts";
import { buildMessage } from "./message.ts";
import { PublishError, type PublishOutcome, type Publisher } from "./publisher.ts";

/** Service Bus accepts at most 100 messages per batch send. */
export const MAX_BATCH_MESSAGES = 100;
/** Retry delays stop growing here. */
const BACKOFF_CAP_SECONDS = 15 * 60;
/** Re-reads after a lost conditional write before giving the entry to the sweeper. */
const SAVE_ATTEMPTS = 3;

export interface DispatcherOptions {
  store: JobStore;
  publisher: Publisher;
  logger: Logger;
  publishTimeoutSeconds: number;
  retryDelaySeconds: number;
  maxAttempts: number;
  /** Set on every message as `replyTo`: where workers send step events. */
  replyTo?: string | null;
  now?: () => Date;
  random?: () => number;
  /** Told after each publish call: how many messages had each result, and how long it took. */
  onPublished?: (result: "sent" | "retryable_error" | "permanent_error", count: number, seconds: number) => void;
}

export interface Dispatcher {
  /** Hands directives over; returns at once. */
  dispatch(items: OutboxWork[]): void;
  /**
   * Publishes now, in batches per topic, and resolves once every outcome is stored (the
   * sweeper's and the operator's path): the entries as stored, null where storing failed.
   */
  publishNow(items: OutboxWork[]): Promise<(OutboxEntry | null)[]>;
  /** Resolves when nothing handed over is still being published or stored. */
  drain(): Promise<void>;
}

export function createDispatcher(options: DispatcherOptions): Dispatcher {
  const { store, publisher, logger } = options;
  const now = options.now ?? (() => new Date());
  const queues = new Map<string, OutboxWork[]>();
  const flushing = new Set<string>();
  const inFlight = new Set<Promise<unknown>>();

  function track<T>(work: Promise<T>): Promise<T> {
    inFlight.add(work);
    const forget = () => inFlight.delete(work);
    work.then(forget, forget);
    return work;
  }

  async function publishBatch(topic: string, items: OutboxWork[]): Promise<PublishOutcome[]> {
    const controller = new AbortController();
    const timeoutMs = options.publishTimeoutSeconds * 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new PublishError(`publish timed out after ${options.publishTimeoutSeconds}s`, true));
      }, timeoutMs);
    });
    try {
      const messages = items.map((item) => buildMessage(item.job, item.step, item.entry, options.replyTo ?? null));
      const outcomes = await Promise.race([publisher.publish(topic, messages, controller.signal), timeout]);
      if (outcomes.length !== items.length) throw new PublishError(`publisher answered ${outcomes.length} outcomes for ${items.length} messages`, true);
      return outcomes;
    } catch (error) {
      const retryable = error instanceof PublishError ? error.retryable : true;
      const message = error instanceof Error ? error.message : String(error);
      return items.map(() => ({ ok: false, error: message, retryable }));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stores one outcome; on a lost conditional write, re-reads and applies it again. */
  async function storeOutcome(item: OutboxWork, outcome: PublishOutcome): Promise<OutboxEntry> {
    let current = item;
    for (let attempt = 1; ; attempt++) {
      const at = now();
      const stamp = at.toISOString();
      try {
        if (outcome.ok) {
          const next = applyPublished({ job: current.job, step: current.step, entry: current.entry }, stamp);
          const saved = await store.saveChanges(current.job.jobId, {
            ...(next.job !== current.job ? { job: next.job } : {}),
            ...(next.step !== current.step ? { steps: [next.step] } : {}),
            outbox: [next.entry],
          });
          return saved.outbox[0]!;
        }
        const delay = backoffSeconds(current.entry.attempts + 1, {
          baseSeconds: options.retryDelaySeconds,
          capSeconds: BACKOFF_CAP_SECONDS,
          ...(options.random ? { random: options.random } : {}),
        });
        const failed = recordPublishFailure(current.entry, {
          error: outcome.error,
          retryable: outcome.retryable,
          now: stamp,
          nextAttemptAt: new Date(at.getTime() + delay * 1000).toISOString(),
          maxAttempts: options.maxAttempts,
        });
        const saved = await store.saveChanges(current.job.jobId, { outbox: [failed] });
        return saved.outbox[0]!;
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError) || attempt >= SAVE_ATTEMPTS) throw error;
        const reloaded = await reload(current);
        if (!reloaded) throw error;
        current = reloaded;
      }
    }
  }

  async function reload(item: OutboxWork): Promise<OutboxWork | null> {
    const aggregate = await store.getJob(item.job.jobId);
    const step = aggregate?.steps.find((s) => s.stepId === item.step.stepId);
    const entry = aggregate?.outbox.find((o) => o.outboxId === item.entry.outboxId);
    if (!aggregate || !step || !entry) return null;
    // Someone else (a sweeper, an admin retry) already settled this entry.
    if (entry.status !== "pending") throw new InvalidTransitionError(`outbox entry ${entry.outboxId} is already ${entry.status}`);
    return { job: aggregate.job, step, entry };
  }

  async function publishAndStore(topic: string, items: OutboxWork[]): Promise<(OutboxEntry | null)[]> {
    const started = performance.now();
    const outcomes = await publishBatch(topic, items);
    if (options.onPublished) {
      const seconds = (performance.now() - started) / 1000;
      const counts = { sent: 0, retryable_error: 0, permanent_error: 0 };
      for (const outcome of outcomes) counts[outcome.ok ? "sent" : outcome.retryable ? "retryable_error" : "permanent_error"]++;
      for (const [result, count] of Object.entries(counts)) if (count > 0) options.onPublished(result as keyof typeof counts, count, seconds);
    }
    return Promise.all(
      items.map(async (item, i) => {
        const outcome = outcomes[i]!;
        if (!outcome.ok) logger.warn({ outboxId: item.entry.outboxId, jobId: item.job.jobId, topic, error: outcome.error, retryable: outcome.retryable }, "publish failed");
        try {
          return await storeOutcome(item, outcome);
        } catch (error) {
          // The entry stays as stored; the sweeper finds it when it is due.
          logger.warn({ outboxId: item.entry.outboxId, jobId: item.job.jobId, err: error }, "could not store publish outcome");
          return null;
        }
      }),
    );
  }

  async function flush(topic: string): Promise<void> {
    flushing.add(topic);
    try {
      for (let queue = queues.get(topic); queue && queue.length > 0; queue = queues.get(topic)) {
        const batch = queue.splice(0, MAX_BATCH_MESSAGES);
        await publishAndStore(topic, batch);
      }
    } finally {
      flushing.delete(topic);
      queues.delete(topic);
    }
  }

  function groupByTopic(items: OutboxWork[]): Map<string, OutboxWork[]> {
    const groups = new Map<string, OutboxWork[]>();
    for (const item of items) {
      const group = groups.get(item.entry.topic) ?? [];
      group.push(item);
      groups.set(item.entry.topic, group);
    }
    return groups;
  }

  return {
    dispatch(items) {
      for (const [topic, group] of groupByTopic(items)) {
        const queue = queues.get(topic) ?? [];
        queue.push(...group);
        queues.set(topic, queue);
        if (!flushing.has(topic)) track(flush(topic));
      }
    },

    async publishNow(items) {
      const batches: Promise<(OutboxEntry | null)[]>[] = [];
      for (const [topic, group] of groupByTopic(items)) {
        for (let i = 0; i < group.length; i += MAX_BATCH_MESSAGES) batches.push(track(publishAndStore(topic, group.slice(i, i + MAX_BATCH_MESSAGES))));
      }
      return (await Promise.all(batches)).flat();
    },

    async drain() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}
