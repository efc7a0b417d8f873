/**
 * The deadline sweep, one chore of the housekeeping loop: the steps whose deadline passed (through the store's
 * deadline index, so the cost follows what expired), each decided by the step-event service
 * against the job as it is. Several replicas may meet the same step: the conditional write lets
 * one win, the others re-read and find nothing left to do.
 */
import type { Logger } from "../logging/logger.ts";
import type { JobStore } from "../storage/job-store.ts";
import { startRound } from "../telemetry/tracing.ts";
import type { ChoreResult } from "./housekeeping.ts";
import type { DeadlineResult, StepEventService } from "./step-events.ts";

/** Steps decided at once: each is a read and a conditional write of its job. */
const CONCURRENCY = 8;

export interface DeadlineSweeperOptions {
  store: JobStore;
  events: Pick<StepEventService, "expire">;
  logger: Logger;
  /** Expired steps taken per sweep; a full sweep is followed by the next at once. */
  batchSize: number;
  now?: () => Date;
  onHandled?: (result: DeadlineResult | "error") => void;
}

export interface DeadlineSweeper {
  /** One sweep now, with what it did: for tests and tools. */
  tick(): Promise<Record<DeadlineResult | "error", number>>;
  /** One sweep as the housekeeping loop runs it. */
  chore(): Promise<ChoreResult>;
}

export function createDeadlineSweeper(options: DeadlineSweeperOptions): DeadlineSweeper {
  const now = options.now ?? (() => new Date());

  async function tick() {
    const counts: Record<DeadlineResult | "error", number> = { "not-due": 0, extended: 0, retried: 0, "timed-out": 0, error: 0 };
    const startTime = Date.now();
    const expired = await options.store.findExpiredSteps(now(), options.batchSize);
    if (expired.length === 0) return counts;
    const round = startRound("step deadlines round", { startTime, attributes: { "lucius.steps.expired": expired.length } });
    await round.run(() => expireAll(expired, counts));
    round.end();
    return counts;
  }

  async function expireAll(expired: readonly { jobId: string; stepId: string }[], counts: Record<DeadlineResult | "error", number>): Promise<void> {
    for (let i = 0; i < expired.length; i += CONCURRENCY) {
      await Promise.all(
        expired.slice(i, i + CONCURRENCY).map(async ({ jobId, stepId }) => {
          let result: DeadlineResult | "error";
          try {
            result = await options.events.expire(jobId, stepId);
            if (result === "timed-out") options.logger.warn({ jobId, stepId }, "step timed out: the job failed");
          } catch (error) {
            result = "error";
            options.logger.warn({ err: error, jobId, stepId }, "a passed step deadline could not be handled; the next sweep retries");
          }
          counts[result]++;
          options.onHandled?.(result);
        }),
      );
    }
  }

  return {
    tick,
    async chore() {
      const counts = await tick();
      // Steps that failed to be handled do not make a sweep full: storage trouble waits the interval.
      return { full: Object.values(counts).reduce((a, b) => a + b, 0) - counts.error >= options.batchSize };
    },
  };
}
