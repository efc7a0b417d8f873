/**
 * The retry loop's pause between sweeps: at most the interval, but it ends in time for a due time
 * announced meanwhile (or before, if still ahead), and at once when the loop stops. Announced
 * times are kept to 100 ms, so at most one per 100 ms of the backoff range is remembered.
 */

/** Announced due times are kept to this precision. */
const BUCKET_MS = 100;
/** How long after an announced due time the pause ends, so that the entry is due by then. */
const MARGIN_MS = 10;

export interface WakeablePause {
  /** Waits at most `ms`, less for a due time announced after `lastSweepMs` (epoch ms). */
  wait(ms: number, lastSweepMs: number): Promise<void>;
  /** An entry falls due at `dueMs` (epoch ms). */
  announce(dueMs: number): void;
  /** Ends a running wait now. */
  end(): void;
}

export function createWakeablePause(): WakeablePause {
  const buckets = new Set<number>();
  let running: { untilMs: number; timer: ReturnType<typeof setTimeout>; resolve: () => void } | null = null;

  /** The earliest announced due time after `afterMs`, forgetting those at or before it. */
  function nextAfter(afterMs: number): number | null {
    let earliest: number | null = null;
    for (const bucket of buckets) {
      const dueMs = bucket * BUCKET_MS;
      if (dueMs <= afterMs) buckets.delete(bucket);
      else if (earliest === null || dueMs < earliest) earliest = dueMs;
    }
    return earliest;
  }

  return {
    wait(ms, lastSweepMs) {
      const next = nextAfter(lastSweepMs);
      const untilNext = next === null ? Number.POSITIVE_INFINITY : next - Date.now() + MARGIN_MS;
      const waitMs = Math.max(0, Math.min(ms, untilNext));
      return new Promise((resolve) => {
        const done = () => {
          running = null;
          resolve();
        };
        running = { untilMs: Date.now() + waitMs, timer: setTimeout(done, waitMs), resolve: done };
      });
    },
    announce(dueMs) {
      if (!Number.isFinite(dueMs)) return;
      buckets.add(Math.ceil(dueMs / BUCKET_MS));
      if (!running || !(dueMs < running.untilMs)) return;
      clearTimeout(running.timer);
      running.timer = setTimeout(running.resolve, Math.max(0, dueMs - Date.now()) + MARGIN_MS);
      running.untilMs = dueMs;
    },
    end() {
      if (!running) return;
      clearTimeout(running.timer);
      running.resolve();
    },
  };
}
