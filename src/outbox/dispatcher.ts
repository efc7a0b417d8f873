/**
 * The fast path: directives handed over after the 202 are published per topic in batches, then
 * their outcomes stored. While one publish of a topic is in flight, the next batch gathers, so
 * load grows batches instead of concurrent calls.
 */
import type { OutboxEntry, OutboxWork } from "../domain/model.ts";
import { markOutboxSent } from "../domain/transitions.ts";
import { WEBHOOK_TOPIC } from "../domain/webhooks.ts";
import type { Logger } from "../logging/logger.ts";
import type { JobStore } from "../storage/job-store.ts";
import { type BrokerHealth, createBrokerHealth } from "./broker-health.ts";
import { buildMessage } from "./message.ts";
import { createOutcomeWriter } from "./outcome-writer.ts";
import { countResults, type PublishResult, publishWithTimeout } from "./publish-with-timeout.ts";
import type { Publisher, PublishOutcome } from "./publisher.ts";
import { WEBHOOK_TIMEOUT_MS, type WebhookSender } from "./webhook-sender.ts";

/** Service Bus accepts at most 100 messages per batch send. */
const MAX_BATCH_MESSAGES = 100;
/**
 * While the broker is down, how often one publish goes ahead (and the sweeper probes) to find out
 * whether it is back: recovery waits at most this long for being noticed.
 */
export const BROKER_PROBE_MS = 250;
/** Directives waiting on the fast path per topic; past this the sweeper takes the rest when due. */
const MAX_QUEUED_PER_TOPIC = 10_000;
/** Entries remembered as answered first (see Dispatcher.answered); one forgotten costs one conditional write. */
const MAX_ANSWERED = 10_000;

export interface DispatcherOptions {
  store: JobStore;
  publisher: Publisher;
  logger: Logger;
  publishTimeoutSeconds: number;
  retryDelaySeconds: number;
  maxAttempts: number;
  /** Delivers webhook entries (topic WEBHOOK_TOPIC); absent: they fail, for good. */
  webhooks?: Pick<WebhookSender, "deliver">;
  /** LUCIUS_WEBHOOK_MAX_ATTEMPTS. */
  webhookMaxAttempts?: number;
  /** Set on every message as `replyTo`: where workers send step events. */
  replyTo?: string | null;
  now?: () => Date;
  random?: () => number;
  /**
   * Told when an entry handed over or stored again will fall due (its next attempt time), so
   * that the sweeper can wake for it instead of waiting out its interval.
   */
  onDue?: (at: string) => void;
  /** Told after each publish call: how many messages had each result, and how long it took. */
  onPublished?: (result: PublishResult, count: number, seconds: number) => void;
}

export interface Dispatcher {
  /** Hands directives over; returns at once. */
  dispatch(items: OutboxWork[]): void;
  /**
   * Publishes now, in batches per topic, and resolves once every outcome is stored (the
   * sweeper's and the operator's path): the entries as stored, null where storing failed.
   */
  publishNow(items: OutboxWork[]): Promise<(OutboxEntry | null)[]>;
  /**
   * Entries a change marked sent because their worker answered before the publish's outcome was
   * stored (see applyStepEvent): that outcome needs no write of its own.
   */
  answered(outboxIds: readonly string[]): void;
  /** Resolves when nothing handed over is still being published or stored. */
  drain(): Promise<void>;
  /** Whether the broker answers, from the publishes so far (and probes). */
  readonly broker: BrokerHealth;
}

export function createDispatcher(options: DispatcherOptions): Dispatcher {
  const { publisher, logger } = options;
  const now = options.now ?? (() => new Date());
  const writeOutcome = createOutcomeWriter({
    store: options.store,
    retryDelaySeconds: options.retryDelaySeconds,
    maxAttempts: options.maxAttempts,
    ...(options.webhookMaxAttempts ? { webhookMaxAttempts: options.webhookMaxAttempts } : {}),
    now,
    ...(options.random ? { random: options.random } : {}),
  });
  const broker = createBrokerHealth({
    check: () => publisher.check(),
    probeEveryMs: BROKER_PROBE_MS,
    timeoutMs: options.publishTimeoutSeconds * 1000,
    onChange: (down) =>
      down
        ? logger.warn("the broker does not answer: directives stay pending, and publishing resumes once it answers again")
        : logger.info("the broker answers again: publishing resumes"),
  });
  const inFlight = createInFlightSet();
  const answeredFirst = new Set<string>();
  const queues = createTopicQueues(async (topic, batch) => {
    // Webhooks go to the clients' receivers, not the broker: its outage does not hold them.
    if (topic !== WEBHOOK_TOPIC && !broker.mayAttempt()) return false;
    const outcomes = await publishAndStore(topic, yetToBeDue(batch, topic));
    // The broker refused the whole batch: the rest of the queue would wait out the same failure
    // batch after batch. It stays stored and pending; the sweeper takes it when due.
    return outcomes.length === 0 || outcomes.some((entry) => entry?.status === "sent");
  });

  /**
   * The fast path publishes only what the sweeper cannot take before the publish has ended (an
   * entry falls due LUCIUS_OUTBOX_RETRY_DELAY after creation), so that the two never publish one
   * entry at the same time. The rest is left to the sweeper.
   */
  function yetToBeDue(batch: OutboxWork[], topic: string): OutboxWork[] {
    // A delivery may take its receiver's whole timeout.
    const seconds = topic === WEBHOOK_TOPIC ? Math.max(options.publishTimeoutSeconds, WEBHOOK_TIMEOUT_MS / 1000) : options.publishTimeoutSeconds;
    const latestStart = new Date(now().getTime() + seconds * 1000).toISOString();
    return batch.filter((item) => item.entry.nextAttemptAt !== null && item.entry.nextAttemptAt > latestStart);
  }

  async function publishAndStore(topic: string, items: OutboxWork[]): Promise<(OutboxEntry | null)[]> {
    if (items.length === 0) return [];
    const started = performance.now();
    let outcomes: PublishOutcome[];
    if (topic === WEBHOOK_TOPIC) {
      outcomes = options.webhooks
        ? await options.webhooks.deliver(items)
        : items.map(() => ({ ok: false as const, error: "webhooks are not configured", retryable: false }));
    } else {
      const messages = items.map((item) => buildMessage(item.job, item.step, item.entry, options.replyTo ?? null));
      outcomes = await publishWithTimeout(publisher, topic, messages, options.publishTimeoutSeconds);
      broker.note(outcomes);
    }
    const seconds = (performance.now() - started) / 1000;
    for (const [result, count] of countResults(outcomes)) options.onPublished?.(result, count, seconds);
    return Promise.all(
      items.map(async (item, i) => {
        const outcome = outcomes[i]!;
        if (!outcome.ok)
          logger.warn({ outboxId: item.entry.outboxId, jobId: item.job.jobId, topic, error: outcome.error, retryable: outcome.retryable }, "publish failed");
        // Stored as sent already, by the change its worker's answer made (waited for when it is
        // still in flight here, rather than raced).
        if (outcome.ok && !item.entry.webhook) await options.store.settled?.(item.job.jobId);
        if (outcome.ok && !item.entry.webhook && answeredFirst.delete(item.entry.outboxId)) return markOutboxSent(item.entry, now().toISOString());
        try {
          const stored = await writeOutcome(item, outcome);
          if (stored.status === "pending" && stored.nextAttemptAt) options.onDue?.(stored.nextAttemptAt);
          return stored;
        } catch (error) {
          // The entry stays as stored; the sweeper finds it when it is due.
          logger.warn({ outboxId: item.entry.outboxId, jobId: item.job.jobId, err: error }, "could not store publish outcome");
          return null;
        }
      }),
    );
  }

  return {
    dispatch(items) {
      const due = items.reduce<string | null>(
        (min, item) => (item.entry.nextAttemptAt && (min === null || item.entry.nextAttemptAt < min) ? item.entry.nextAttemptAt : min),
        null,
      );
      if (due) options.onDue?.(due);
      for (const [topic, group] of groupByTopic(items)) {
        const flushing = queues.push(topic, group);
        if (flushing) inFlight.track(flushing);
      }
    },

    async publishNow(items) {
      const batches: Promise<(OutboxEntry | null)[]>[] = [];
      for (const [topic, group] of groupByTopic(items)) {
        for (let i = 0; i < group.length; i += MAX_BATCH_MESSAGES) batches.push(inFlight.track(publishAndStore(topic, group.slice(i, i + MAX_BATCH_MESSAGES))));
      }
      return (await Promise.all(batches)).flat();
    },

    answered(outboxIds) {
      for (const outboxId of outboxIds) {
        answeredFirst.add(outboxId);
        if (answeredFirst.size > MAX_ANSWERED) answeredFirst.delete(answeredFirst.values().next().value!);
      }
    },

    drain: () => inFlight.drain(),
    broker,
  };
}

/**
 * One queue per topic (at most MAX_QUEUED_PER_TOPIC long), flushed by one loop per topic in
 * batches of at most MAX_BATCH_MESSAGES. `push` starts the loop when none runs and returns it;
 * otherwise the running loop takes the items. A batch answered `false` drops what is queued.
 */
function createTopicQueues(flushBatch: (topic: string, batch: OutboxWork[]) => Promise<boolean>) {
  const queues = new Map<string, OutboxWork[]>();
  const flushing = new Set<string>();

  async function flush(topic: string): Promise<void> {
    flushing.add(topic);
    try {
      for (let queue = queues.get(topic); queue && queue.length > 0; queue = queues.get(topic)) {
        if (!(await flushBatch(topic, queue.splice(0, MAX_BATCH_MESSAGES)))) queue.length = 0;
      }
    } finally {
      flushing.delete(topic);
      queues.delete(topic);
    }
  }

  return {
    push(topic: string, items: OutboxWork[]): Promise<void> | null {
      const queue = queues.get(topic) ?? [];
      queue.push(...items.slice(0, Math.max(0, MAX_QUEUED_PER_TOPIC - queue.length)));
      queues.set(topic, queue);
      return flushing.has(topic) ? null : flush(topic);
    },
  };
}

/** Promises still running, so that a stop can wait for them. */
function createInFlightSet() {
  const inFlight = new Set<Promise<unknown>>();
  return {
    track<T>(work: Promise<T>): Promise<T> {
      inFlight.add(work);
      const forget = () => inFlight.delete(work);
      work.then(forget, forget);
      return work;
    },
    async drain(): Promise<void> {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
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
