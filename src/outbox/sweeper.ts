/**
 * The retry loop (docs/OPERATIONS.md): find up to a batch of due entries, lease them, publish the
 * leased ones and store the outcomes. While sweeps come back full the next one starts at once, with
 * at most a few batches publishing at a time; the interval is only the pause when nothing more is
 * due. Finding and leasing are never concurrent within one sweeper, so it never takes an entry
 * twice; other replicas are kept off by the leases.
 */
import type { Logger } from "../logging/logger.ts";
import type { JobStore } from "../storage/job-store.ts";
import { BROKER_PROBE_MS, type Dispatcher } from "./dispatcher.ts";
import { isHeld, leaseEntries, type PublishSummary, summarize } from "./lease.ts";

export type { PublishSummary } from "./lease.ts";

/** Batches publishing at once while draining: enough to keep the broker and storage busy. */
const DEFAULT_BATCHES_IN_FLIGHT = 4;
/** "Whatever its due time": every pending entry is due by then. */
const FAR_FUTURE = new Date("9999-12-31T23:59:59.999Z");
/**
 * Announced due times are kept to this precision: at most one per 100 ms of the backoff range
 * (15 minutes: 9,000), however many entries are announced.
 */
const HINT_BUCKET_MS = 100;
/** How long after an announced due time the sweeper wakes, so that the entry is due by then. */
const WAKE_MARGIN_MS = 10;
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
   * second call joins the running one.
   */
  drainAll(): Promise<PublishSummary>;
  start(): void;
  /** Stops sweeping and waits for the running sweep and the batches still publishing. */
  stop(): Promise<void>;
}

export function createSweeper(options: SweeperOptions): Sweeper {
  const now = options.now ?? (() => new Date());
  const batchesInFlight = options.batchesInFlight ?? DEFAULT_BATCHES_IN_FLIGHT;
  const publishing = new Set<Promise<unknown>>();
  const progress = createProgressLog(options);
  let loop: Promise<void> | null = null;
  let stopped = true;
  /** The running pause, if any: when it ends and how to end it sooner. */
  let paused: { untilMs: number; timer: ReturnType<typeof setTimeout>; resolve: () => void } | null = null;
  /** Due times announced by the dispatcher, rounded up to HINT_BUCKET_MS (epoch ms / bucket). */
  const hints = new Set<number>();

  /** The earliest announced due time after `afterMs`, forgetting those at or before it. */
  function nextHint(afterMs: number): number | null {
    let earliest: number | null = null;
    for (const bucket of hints) {
      const dueMs = bucket * HINT_BUCKET_MS;
      if (dueMs <= afterMs) hints.delete(bucket);
      else if (earliest === null || dueMs < earliest) earliest = dueMs;
    }
    return earliest;
  }

  /** Finds and leases one batch due by `cutoff` (now by default); its publishing goes on in the background. */
  async function sweep(cutoff?: Date): Promise<{ due: number; published: Promise<PublishSummary> }> {
    const at = now();
    const found = await options.store.findDueOutbox(cutoff ?? at, options.batchSize);
    // Entries still held by a lease come back only when asked for everything (the operator's
    // drain): they are not ours to take, and do not count as work found.
    const due = found.filter((work) => !isHeld(work.entry, at.toISOString()));
    const leased = await leaseEntries(due, { store: options.store, leaseSeconds: options.leaseSeconds, now: at });
    const published = leased.length === 0 ? Promise.resolve(summarize([])) : options.dispatcher.publishNow(leased).then(summarize);
    return { due: due.length, published: published.then(progress.record) };
  }

  function track(work: Promise<unknown>): void {
    const settled = work.catch((error: unknown) => options.logger.warn({ err: error }, "publishing a swept batch failed; its entries stay due"));
    publishing.add(settled);
    void settled.finally(() => publishing.delete(settled));
  }

  /** Waits `ms`, or less when stopped or when an entry falls due sooner (see wakeBy). */
  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        paused = null;
        resolve();
      };
      paused = { untilMs: Date.now() + ms, timer: setTimeout(done, ms), resolve: done };
    });
  }

  function endPause(): void {
    if (!paused) return;
    clearTimeout(paused.timer);
    paused.resolve();
  }

  async function run(): Promise<void> {
    while (!stopped) {
      // A broker that does not answer: probe it instead of spending every due entry's attempts.
      if (options.dispatcher.broker.isDown() && !(await options.dispatcher.broker.probe())) {
        await pause(Math.min(options.intervalSeconds * 1000, BROKER_PROBE_MS));
        continue;
      }
      let full = false;
      const sweptAt = Date.now();
      try {
        const { due, published } = await sweep();
        full = due >= options.batchSize;
        track(published);
        options.onTick?.("ok");
      } catch (error) {
        options.onTick?.("error");
        options.logger.warn({ err: error }, "sweep failed; the next one retries");
      }
      while (publishing.size >= batchesInFlight) await Promise.race(publishing);
      if (!full && !stopped) {
        await progress.idle();
        // An entry announced earlier and not yet due at the last sweep ends the pause in time for it.
        const hint = nextHint(sweptAt);
        const untilHint = hint === null ? Number.POSITIVE_INFINITY : hint - Date.now() + WAKE_MARGIN_MS;
        await pause(Math.max(0, Math.min(options.intervalSeconds * 1000, untilHint)));
      }
    }
  }

  let draining: Promise<PublishSummary> | null = null;

  async function drainEverything(): Promise<PublishSummary> {
    const totals = summarize([]);
    const add = (summary: PublishSummary) => {
      totals.attempted += summary.attempted;
      totals.sent += summary.sent;
      totals.failed += summary.failed;
    };
    const batches = new Set<Promise<unknown>>();
    for (let full = true; full; ) {
      const { due, published } = await sweep(FAR_FUTURE);
      full = due >= options.batchSize;
      const batch = published.then(add);
      batches.add(batch);
      void batch.finally(() => batches.delete(batch));
      while (batches.size >= batchesInFlight) await Promise.race(batches);
    }
    await Promise.all(batches);
    await progress.idle();
    return totals;
  }

  return {
    drainAll() {
      draining ??= drainEverything().finally(() => {
        draining = null;
      });
      return draining;
    },
    async tick() {
      const { published } = await sweep();
      return published;
    },
    wakeBy(at) {
      const dueMs = Date.parse(at);
      if (!Number.isFinite(dueMs)) return;
      // Remembered, so that the pause after the next sweep can end in time for it.
      hints.add(Math.ceil(dueMs / HINT_BUCKET_MS));
      if (!paused || !(dueMs < paused.untilMs)) return;
      clearTimeout(paused.timer);
      // A little after the due time, so that the entry is due when the sweep reads it.
      paused.timer = setTimeout(paused.resolve, Math.max(0, dueMs - Date.now()) + WAKE_MARGIN_MS);
      paused.untilMs = dueMs;
    },
    start() {
      if (!stopped) return;
      stopped = false;
      loop = run();
    },
    async stop() {
      stopped = true;
      endPause();
      await loop;
      await draining?.catch(() => {});
      while (publishing.size > 0) await Promise.allSettled([...publishing]);
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
