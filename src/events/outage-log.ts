/**
 * What an operator reads while the events receiver cannot reach the broker. The SDK reports every
 * reconnection attempt (about five a second), which would be 18,000 warnings an hour of outage;
 * instead: one warning when the loss begins, a reminder at most once a minute with the outage's
 * length, and one line when events flow again. Every error is still counted (for the metrics).
 */
import type { Logger } from "../logging/logger.ts";

/** A reminder this long after the last line while the outage goes on. */
export const REMIND_EVERY_MS = 60_000;

export interface OutageLogOptions {
  logger: Logger;
  entity: string;
  /** Each reported error, for the metrics. */
  onError?: () => void;
  now?: () => number;
}

export interface OutageLog {
  /** The SDK reported an error. */
  error(error: Error): void;
  /** Events flow again (a message arrived, or the SDK has been quiet for a minute). */
  recovered(): void;
  /** Whether an outage is going on. */
  readonly down: boolean;
}

export function createOutageLog(options: OutageLogOptions): OutageLog {
  const now = options.now ?? Date.now;
  const { logger, entity } = options;
  let outage: { since: number; lastLineAt: number; errors: number } | null = null;
  const seconds = (since: number) => Math.round((now() - since) / 1000);
  return {
    error(error) {
      options.onError?.();
      if (!outage) {
        outage = { since: now(), lastLineAt: now(), errors: 1 };
        logger.warn({ err: error, entity }, "step events: the receiver lost the broker; the SDK reconnects (logged again at most once a minute)");
        return;
      }
      outage.errors++;
      if (now() - outage.lastLineAt < REMIND_EVERY_MS) return;
      outage.lastLineAt = now();
      logger.warn({ err: error, entity, outageSeconds: seconds(outage.since), errors: outage.errors }, "step events: still not receiving");
    },
    recovered() {
      if (!outage) return;
      logger.info({ entity, outageSeconds: seconds(outage.since), errors: outage.errors }, "step events: the receiver is back");
      outage = null;
    },
    get down() {
      return outage !== null;
    },
  };
}
