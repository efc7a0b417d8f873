/**
 * The housekeeping loop: every LUCIUS_OUTBOX_RETRY_INTERVAL, its chores (passed step deadlines,
 * retention) run one after the other; while one comes back with a full batch the next round
 * starts at once, so a backlog is worked off at the speed of storage. It runs with or without a
 * broker; the outbox's retry loop is its own (src/outbox/sweeper.ts).
 */
import type { Logger } from "../logging/logger.ts";
import { AGAIN, createLoop, pauseFor } from "../loops/loop.ts";

export interface ChoreResult {
  /** The chore took a whole batch: more may be waiting. */
  full: boolean;
}

export interface Chore {
  name: string;
  run(): Promise<ChoreResult>;
}

export interface HousekeepingOptions {
  chores: Chore[];
  intervalSeconds: number;
  logger: Logger;
}

export interface Housekeeping {
  start(): void;
  /** Stops after the running chore. */
  stop(): Promise<void>;
}

export function createHousekeeping(options: HousekeepingOptions): Housekeeping {
  const intervalMs = options.intervalSeconds * 1000;
  const loop = createLoop({
    name: "housekeeping",
    errorPauseMs: intervalMs,
    logger: options.logger,
    async round(stopping) {
      let full = false;
      for (const chore of options.chores) {
        if (stopping.aborted) break;
        try {
          full = (await chore.run()).full || full;
        } catch (error) {
          options.logger.warn({ err: error, chore: chore.name }, "housekeeping: a chore failed; the next round retries");
        }
      }
      return full ? AGAIN : pauseFor(intervalMs);
    },
  });
  return { start: () => loop.start(), stop: () => loop.stop() };
}
