/**
 * The retry loop (docs/OPERATIONS.md): find up to a batch of due entries, lease them, publish the
 * leased ones and store the outcomes. While sweeps come back full the next one starts at once, with
 * at most a few batches publishing at a time; the interval is only the pause when nothing more is
 * due. Finding and leasing are never concurrent within one sweeper, so it never takes an entry
 * twice; other replicas are kept off by the leases.
 */
import { randomUUID } from "node:crypto";
import type { OutboxWork } from "../domain/model.ts";
import type { Logger } from "../logging/logger.ts";
import { AGAIN, createLoop, pauseFor } from "../loops/loop.ts";
import type { JobStore } from "../storage/job-store.ts";
import { startRound } from "../telemetry/tracing.ts";
import { BROKER_PROBE_MS, type Dispatcher } from "./dispatcher.ts";
import { isHeld, leaseEntries, type PublishSummary, summarize, withdrawnAsOrphan } from "./lease.ts";

export type { PublishSummary } from "./lease.ts";

/** Batches publishing at once while draining: enough to keep the broker and storage busy. */
const DEFAULT_BATCHES_IN_FLIGHT = 4;
/** How far past entries held by leases an operator's drain looks, in batches. */
const MAX_DRAIN_WINDOW_BATCHES = 16;
/** "Whatever its due time": every pending entry is due by then. */
const FAR_FUTURE = new Date("9999-12-31T23:59:59.999Z");
/** While draining, one progress line this often. */
const PROGRESS_LOG_MS = 5000;

export interface SweeperOptions {
  store: JobStore;
  dispatcher: Dispatcher;
  logger: Logger;
  intervalSeconds: number;
  batchSize: number;
  leaseSeconds: number;
  batchesInFlight?: number;
  now?: () => Date;
  onTick?: (result: "ok" | "error") => void;
  /** Told what each batch's publishing did (for the metrics). */
  onPublished?: (summary: PublishSummary) => void;
  /** Pending entries left, for the progress line; null when unknown. */
  backlog?: () => Promise<number | null>;
}

export interface Sweeper {
  /** One sweep now, publishing awaited: what the loop runs, for tests and tools. */
  tick(): Promise<PublishSummary>;
  /** An entry falls due at `at` (ISO time): a pause that would outlast it ends then instead. */
  wakeBy(at: string): void;
  /**
   * Publishes every pending entry, whatever its due time, sweep after sweep until one comes back
   * short (the operator's "retry all"); resolves with the totals. One drain runs at a time: a
   * call during a drain starts another once it ends.
   */
  drainAll(): Promise<PublishSummary>;
  start(): void;
  /** Stops sweeping and waits for the running sweep and the batches still publishing. */
  stop(): Promise<void>;
}

export function createSweeper(options: SweeperOptions): Sweeper {
  const now = options.now ?? (() => new Date());
  const batchesInFlight = options.batchesInFlight ?? DEFAULT_BATCHES_IN_FLIGHT;
  const publishing = createInFlight(batchesInFlight, options.logger);
  const progress = createProgressLog(options);
  const loop = createLoop({ name: "outbox retry", round, errorPauseMs: options.intervalSeconds * 1000, logger: options.logger });
  let draining: Promise<PublishSummary> | null = null;

  /** Finds and leases one batch due by `cutoff` (now by default); its publishing goes on in the background. */
  async function sweep(
    cutoff?: Date,
    limit = options.batchSize,
    publishing?: Set<string>,
  ): Promise<{ found: number; due: number; published: Promise<PublishSummary> }> {
    const at = now();
    const startTime = Date.now();
    const skip = publishing ? { skip: publishing } : {};
    let found: number;
    let due: OutboxWork[];
    let leased: OutboxWork[];
    let round: ReturnType<typeof startRound> | null;
    const { store } = options;
    if (store.takeDueOutbox) {
      // Found and leased in one pass (ledger: a lease on the due markers, no write per entry).
      const lease = { now: at, until: new Date(at.getTime() + options.leaseSeconds * 1000), token: randomUUID() };
      const taken = await store.takeDueOutbox(cutoff ?? at, limit, lease, skip);
      found = taken.seen;
      const orphans = await Promise.all(taken.taken.map((work) => withdrawnAsOrphan(work, store, at.toISOString())));
      due = leased = taken.taken.filter((_, i) => !orphans[i]);
      round = due.length > 0 ? startRound("outbox retry round", roundOptions(startTime, due)) : null;
    } else {
      const work = await store.findDueOutbox(cutoff ?? at, limit, skip);
      found = work.length;
      // Entries still held by a lease come back only when asked for everything (the operator's
      // drain): they are not ours to take, and do not count as work found.
      due = work.filter((item) => !isHeld(item.entry, at.toISOString()));
      const started = due.length > 0 ? startRound("outbox retry round", roundOptions(startTime, due)) : null;
      round = started;
      leased = started
        ? await started
            .run(() => leaseEntries(due, { store, leaseSeconds: options.leaseSeconds, now: at }))
            .catch((error: unknown) => {
              started.end();
              throw error;
            })
        : [];
    }
    const published = leased.length === 0 ? Promise.resolve(summarize([])) : options.dispatcher.publishNow(leased).then(summarize);
    if (publishing) {
      // A drain's next sweeps pass over what this batch publishes until it is done.
      for (const work of leased) publishing.add(work.entry.outboxId);
      void published
        .finally(() => {
          for (const work of leased) publishing.delete(work.entry.outboxId);
        })
        .catch(() => {});
    }
    void published.finally(() => round?.end()).catch(() => {});
    return { found, due: due.length, published: published.then(progress.record) };
  }

  function roundOptions(startTime: number, due: readonly OutboxWork[]) {
    return { startTime, traceparents: due.map((work) => work.entry.traceparent), attributes: { "lucius.entries.due": due.length } };
  }

  /** One round of the retry loop: a sweep, or a probe of a broker that stopped answering. */
  async function round(stopping: AbortSignal): Promise<ReturnType<typeof pauseFor>> {
    // A broker that does not answer: probe it instead of spending every due entry's attempts.
    if (options.dispatcher.broker.isDown() && !(await options.dispatcher.broker.probe())) {
      return pauseFor(Math.min(options.intervalSeconds * 1000, BROKER_PROBE_MS));
    }
    try {
      const { due, published } = await sweep();
      await publishing.add(published);
      options.onTick?.("ok");
      if (due >= options.batchSize) return AGAIN;
    } catch (error) {
      options.onTick?.("error");
      options.logger.warn({ err: error }, "sweep failed; the next one retries");
    }
    // Stopping: batches may still be publishing, so the backlog is not done.
    if (!stopping.aborted) await progress.idle();
    return pauseFor(options.intervalSeconds * 1000);
  }

  async function drainEverything(): Promise<PublishSummary> {
    const totals = summarize([]);
    const batches = createInFlight(batchesInFlight, options.logger);
    const widest = options.batchSize * MAX_DRAIN_WINDOW_BATCHES;
    // Bounded by the batches in flight: each holds at most batchSize entries.
    const publishing = new Set<string>();
    for (let limit = options.batchSize; ; ) {
      const { found, due, published } = await sweep(FAR_FUTURE, limit, publishing);
      await batches.add(
        published.then((summary) => {
          totals.attempted += summary.attempted;
          totals.sent += summary.sent;
          totals.failed += summary.failed;
        }),
      );
      if (found < limit) break; // every pending entry was seen
      if (due > 0) {
        limit = options.batchSize;
        continue;
      }
      // A window full of entries held by leases (earlier batches of ours, other replicas): look
      // past them rather than stop short of the rest; what stays held beyond the widest window is
      // left to its holders and the retry loop.
      if (limit >= widest) break;
      limit = Math.min(limit * 2, widest);
    }
    await batches.settle();
    await progress.idle();
    return totals;
  }

  return {
    drainAll() {
      // Asked again while draining: what was made pending since (reset failed entries) may sit
      // behind the running drain's last sweep, so one more drain follows it.
      const after: Promise<unknown> = draining ?? Promise.resolve();
      const next: Promise<PublishSummary> = after.catch(() => {}).then(drainEverything);
      draining = next;
      void next.finally(() => {
        if (draining === next) draining = null;
      });
      return next;
    },
    async tick() {
      const { published } = await sweep();
      return published;
    },
    wakeBy: (at) => loop.wakeBy(Date.parse(at)),
    start: () => loop.start(),
    async stop() {
      await loop.stop();
      await draining?.catch(() => {});
      await publishing.settle();
    },
  };
}

/** Batches publishing in the background, at most `limit` at once: `add` waits while that many run. */
function createInFlight(limit: number, logger: Logger) {
  const running = new Set<Promise<unknown>>();
  return {
    async add(work: Promise<unknown>): Promise<void> {
      const settled = work.catch((error: unknown) => logger.warn({ err: error }, "publishing a swept batch failed; its entries stay due"));
      running.add(settled);
      void settled.finally(() => running.delete(settled));
      while (running.size >= limit) await Promise.race(running);
    },
    async settle(): Promise<void> {
      while (running.size > 0) await Promise.allSettled([...running]);
    },
  };
}

/**
 * The drain as an operator sees it: one line every few seconds while entries are being published
 * (how many, how fast, how many are still pending), and one when the backlog is done.
 */
function createProgressLog(options: Pick<SweeperOptions, "logger" | "onPublished" | "backlog">) {
  let window = { attempted: 0, sent: 0, failed: 0, since: performance.now() };
  let active = false;

  async function flush(final: boolean): Promise<void> {
    const seconds = (performance.now() - window.since) / 1000;
    const pending = options.backlog ? await options.backlog().catch(() => null) : null;
    options.logger.info(
      { ...(({ since: _, ...counts }) => counts)(window), perSecond: Math.round(window.attempted / Math.max(seconds, 0.001)), pending },
      final ? "sweeper: the due backlog is published" : "sweeper: publishing the due backlog",
    );
    window = { attempted: 0, sent: 0, failed: 0, since: performance.now() };
  }

  return {
    record(summary: PublishSummary): PublishSummary {
      options.onPublished?.(summary);
      if (summary.attempted === 0) return summary;
      active = true;
      window.attempted += summary.attempted;
      window.sent += summary.sent;
      window.failed += summary.failed;
      if (performance.now() - window.since >= PROGRESS_LOG_MS) void flush(false);
      return summary;
    },
    /** Nothing more is due: close the drain's account. */
    async idle(): Promise<void> {
      if (!active) return;
      active = false;
      await flush(true);
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
