/**
 * The housekeeping loop: every LUCIUS_OUTBOX_RETRY_INTERVAL, its chores (passed step deadlines,
 * retention) run one after the other; while one comes back with a full batch the next round
 * starts at once, so a backlog is worked off at the speed of storage. It runs with or without a
 * broker; the outbox's retry loop is its own (src/outbox/sweeper.ts).
 */
import type { Logger } from "../logging/logger.ts";
import { createWakeablePause } from "../outbox/wakeable-pause.ts";

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
  const pause = createWakeablePause();
  let stopped = true;
  let loop: Promise<void> | null = null;

  async function run(): Promise<void> {
    while (!stopped) {
      const startedAt = Date.now();
      let full = false;
      for (const chore of options.chores) {
        if (stopped) break;
        try {
          full = (await chore.run()).full || full;
        } catch (error) {
          options.logger.warn({ err: error, chore: chore.name }, "housekeeping: a chore failed; the next round retries");
        }
      }
      if (!full && !stopped) await pause.wait(options.intervalSeconds * 1000, startedAt);
    }
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      loop = run();
    },
    async stop() {
      stopped = true;
      pause.end();
      await loop;
    },
  };
}
