/**
 * The one background loop of the service: a round of work, then a pause, until stopped. The
 * outbox's retry loop and the housekeeping loop (step deadlines, retention) are each one of
 * these. A round that found a full batch asks to go again at once, so a backlog is worked off at
 * the speed of storage; otherwise the loop pauses, and the pause ends early for a due time
 * announced meanwhile (`wakeBy`) and at once on `stop`.
 */
import type { Logger } from "../logging/logger.ts";
import { createWakeablePause } from "./wakeable-pause.ts";

/** What a round asks for next: another round at once, or a pause of at most `pauseMs`. */
export type NextRound = { again: true } | { again: false; pauseMs: number };

export const AGAIN: NextRound = { again: true };
export const pauseFor = (pauseMs: number): NextRound => ({ again: false, pauseMs });

export interface LoopOptions {
  /** Named in the log line of a round that threw. */
  name: string;
  /**
   * One round of work. `stopping` is aborted when the loop is told to stop: a round made of
   * several pieces checks it between them. A round that throws is logged and followed by `errorPauseMs`.
   */
  round(stopping: AbortSignal): Promise<NextRound>;
  errorPauseMs: number;
  logger: Logger;
}

export interface Loop {
  start(): void;
  /** Something falls due at `dueMs` (epoch ms): a pause that would outlast it ends then instead. */
  wakeBy(dueMs: number): void;
  /** Ends the pause, lets the running round finish, and resolves once it has. */
  stop(): Promise<void>;
}

export function createLoop(options: LoopOptions): Loop {
  const pause = createWakeablePause();
  let stopping: AbortController | null = null;
  let running: Promise<void> | null = null;

  async function run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const startedAt = Date.now();
      let next: NextRound;
      try {
        next = await options.round(signal);
      } catch (error) {
        options.logger.warn({ err: error, loop: options.name }, "a background round failed; the next one retries");
        next = pauseFor(options.errorPauseMs);
      }
      if (!next.again && !signal.aborted) await pause.wait(next.pauseMs, startedAt);
    }
  }

  return {
    start() {
      if (stopping) return;
      const controller = new AbortController();
      stopping = controller;
      // Started again while a stop still waits: the new run begins once the old round is over,
      // so that two rounds never overlap.
      running = running ? running.then(() => run(controller.signal)) : run(controller.signal);
    },
    wakeBy: (dueMs) => pause.announce(dueMs),
    async stop() {
      stopping?.abort();
      stopping = null;
      pause.end();
      const current = running;
      await current;
      if (running === current) running = null;
    },
  };
}
