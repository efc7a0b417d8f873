/**
 * The retry loop (docs/OPERATIONS.md): every interval, take up to a batch of due entries, lease each
 * by an ETag-conditional write, publish the leased ones, store the outcomes. Ticks never
 * overlap: the next is scheduled when the previous ends.
 */
import { randomUUID } from "node:crypto";
import { ConcurrencyConflictError, InvalidTransitionError } from "../domain/errors.ts";
import type { OutboxEntry, OutboxWork } from "../domain/model.ts";
import { leaseEntry } from "../domain/transitions.ts";
import type { Logger } from "../logging/logger.ts";
import type { JobStore } from "../storage/job-store.ts";
import type { Dispatcher } from "./dispatcher.ts";

export interface PublishSummary {
  attempted: number;
  sent: number;
  failed: number;
}

export interface LeaseOptions {
  store: JobStore;
  dispatcher: Dispatcher;
  /** How long a lease keeps other sweepers away; a dead holder's lease simply runs out. */
  leaseSeconds: number;
  now: Date;
}

/**
 * Leases each entry (losers of a race skip it: another sweeper has it), publishes what it
 * leased, and counts the outcomes.
 */
export async function leaseAndPublish(items: OutboxWork[], options: LeaseOptions): Promise<PublishSummary> {
  const now = options.now.toISOString();
  const until = new Date(options.now.getTime() + options.leaseSeconds * 1000).toISOString();
  // Tells this sweep's leases from another replica's written in the same millisecond.
  const token = randomUUID();
  const leased = await Promise.all(
    items.map(async (work): Promise<OutboxWork | null> => {
      const lease = leaseEntry(work.entry, now, until, token);
      try {
        const saved = await options.store.saveChanges(work.job.jobId, { outbox: [lease] });
        return { ...work, entry: saved.outbox[0]! };
      } catch (error) {
        if (error instanceof InvalidTransitionError) return null;
        if (!(error instanceof ConcurrencyConflictError)) throw error;
        // A write whose answer was lost (a timeout, then the SDK's retry meets our own new
        // etag) is ours all the same: left alone, the entry would wait out the whole lease.
        const current = (await options.store.getJob(work.job.jobId))?.outbox.find((o) => o.outboxId === work.entry.outboxId);
        const ours = current?.status === "pending" && current.lease === token;
        return ours ? { ...work, entry: current } : null;
      }
    }),
  );
  const mine = leased.filter((work): work is OutboxWork => work !== null);
  const outcomes: (OutboxEntry | null)[] = mine.length > 0 ? await options.dispatcher.publishNow(mine) : [];
  const sent = outcomes.filter((entry) => entry?.status === "sent").length;
  return { attempted: mine.length, sent, failed: mine.length - sent };
}

export interface SweeperOptions {
  store: JobStore;
  dispatcher: Dispatcher;
  logger: Logger;
  intervalSeconds: number;
  batchSize: number;
  leaseSeconds: number;
  now?: () => Date;
  onTick?: (result: "ok" | "error") => void;
}

export interface Sweeper {
  /** One sweep now; what the timer runs. */
  tick(): Promise<PublishSummary>;
  start(): void;
  /** Stops scheduling and waits for a running tick to finish. */
  stop(): Promise<void>;
}

export function createSweeper(options: SweeperOptions): Sweeper {
  const now = options.now ?? (() => new Date());
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<unknown> | null = null;
  let stopped = true;

  async function tick(): Promise<PublishSummary> {
    const at = now();
    const due = await options.store.findDueOutbox(at, options.batchSize);
    const summary = await leaseAndPublish(due, { store: options.store, dispatcher: options.dispatcher, leaseSeconds: options.leaseSeconds, now: at });
    if (summary.attempted > 0) options.logger.info({ ...summary, due: due.length }, "sweep published due outbox entries");
    return summary;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      running = tick()
        .then(
          () => options.onTick?.("ok"),
          (error: unknown) => {
            options.onTick?.("error");
            options.logger.warn({ err: error }, "sweep failed; the next one retries");
          },
        )
        .finally(() => {
          running = null;
          schedule();
        });
    }, options.intervalSeconds * 1000);
  }

  return {
    tick,
    start() {
      if (!stopped) return;
      stopped = false;
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/**
 * A lease must outlive a whole sweep of a batch (leases, publish, outcomes) under load, or a
 * second sweeper re-publishes what the first is still storing; it is also how long a dead
 * instance's entries wait. 30 s at least, 5 publish timeouts with longer timeouts.
 */
export function leaseSecondsFor(publishTimeoutSeconds: number): number {
  return Math.max(30, 5 * publishTimeoutSeconds);
}
