import { type OutboundMessage, PublishError, type Publisher, type PublishOutcome } from "../src/outbox/publisher.ts";

export interface Recorded {
  topic: string;
  message: OutboundMessage;
}

/**
 * An in-process publisher that records what it was asked to publish, and can be told to fail,
 * to reject single messages, or to hang until released.
 */
export function createRecordingPublisher() {
  const published: Recorded[] = [];
  const calls: { topic: string; count: number }[] = [];
  let failure: PublishError | null = null;
  let rejectMessage: ((message: OutboundMessage) => PublishOutcome | null) | null = null;
  let hold: Promise<void> | null = null;
  let closed = false;

  const publisher: Publisher = {
    async publish(topic, messages, signal) {
      calls.push({ topic, count: messages.length });
      if (hold) {
        const gate = hold;
        await Promise.race([gate, new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }))]);
        if (signal.aborted) throw new PublishError("aborted", true);
      }
      if (failure) throw failure;
      return messages.map((message) => {
        const rejected = rejectMessage?.(message) ?? null;
        if (rejected) return rejected;
        published.push({ topic, message: structuredClone(message) });
        return { ok: true } as const;
      });
    },
    async check() {
      if (failure) throw failure;
    },
    async close() {
      closed = true;
    },
  };

  return {
    publisher,
    published,
    calls,
    get closed() {
      return closed;
    },
    failWith(message: string, retryable: boolean) {
      failure = new PublishError(message, retryable);
    },
    /** Per-message outcomes: return null to publish the message, or an outcome to refuse it. */
    rejectWhen(rule: (message: OutboundMessage) => PublishOutcome | null) {
      rejectMessage = rule;
    },
    heal() {
      failure = null;
      rejectMessage = null;
    },
    /** Publishes wait until the returned function is called (or the dispatcher aborts them). */
    stall(): () => void {
      let release!: () => void;
      hold = new Promise<void>((resolve) => {
        release = resolve;
      });
      return () => {
        hold = null;
        release();
      };
    },
  };
}

/** One message's publish call by one sweeper (replica), with its start and end times. */
export interface TimedPublish {
  sweeper: number;
  messageId: string;
  start: number;
  end: number;
}

/** Wraps a publisher so that every message it publishes is logged with the call's time span. */
export function timedPublisher(sweeper: number, inner: Publisher, log: TimedPublish[]): Publisher {
  return {
    async publish(topic, messages, signal) {
      const start = performance.now();
      try {
        return await inner.publish(topic, messages, signal);
      } finally {
        const end = performance.now();
        for (const message of messages) log.push({ sweeper, messageId: message.messageId, start, end });
      }
    },
    check: () => inner.check(),
    close: () => inner.close(),
  };
}

/** Pairs of publishes of one message by two sweepers whose calls overlapped in time. */
export function overlappingPublishes(log: readonly TimedPublish[]): number {
  const byMessage = new Map<string, TimedPublish[]>();
  for (const p of log) byMessage.set(p.messageId, [...(byMessage.get(p.messageId) ?? []), p]);
  let overlapping = 0;
  for (const attempts of byMessage.values()) {
    for (const x of attempts) for (const y of attempts) if (x.sweeper < y.sweeper && !(x.end <= y.start || y.end <= x.start)) overlapping++;
  }
  return overlapping;
}
