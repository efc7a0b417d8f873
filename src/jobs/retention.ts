/**
 * Retention, a chore of the housekeeping loop: jobs that ended more than LUCIUS_JOB_RETENTION ago
 * go with everything of them, and idempotency records older than LUCIUS_IDEMPOTENCY_TTL go too
 * (the store finds both through indexes, so the cost follows what expired). Several replicas may
 * clean at once: each removal is idempotent.
 */
import type { Logger } from "../logging/logger.ts";
import type { JobStore } from "../storage/job-store.ts";
import { startRound } from "../telemetry/tracing.ts";
import type { ChoreResult } from "./housekeeping.ts";

export interface RetentionOptions {
  store: JobStore;
  logger: Logger;
  /** 0 keeps ended jobs forever. */
  jobRetentionSeconds: number;
  idempotencyTtlSeconds: number;
  /** Jobs, and records, removed per round at most. */
  batchSize: number;
  now?: () => Date;
}

export interface Retention {
  /** One round now: how many jobs and records went. */
  tick(): Promise<{ jobs: number; keys: number }>;
  chore(): Promise<ChoreResult>;
}

export function createRetention(options: RetentionOptions): Retention {
  const now = options.now ?? (() => new Date());
  const before = (seconds: number) => new Date(now().getTime() - seconds * 1000);

  async function tick() {
    const startTime = Date.now();
    const jobs = options.jobRetentionSeconds > 0 ? await options.store.purgeEndedJobs(before(options.jobRetentionSeconds), options.batchSize) : 0;
    const keys = await options.store.purgeIdempotencyRecords(before(options.idempotencyTtlSeconds), options.batchSize);
    if (jobs + keys > 0) {
      options.logger.info({ jobs, keys }, "retention: removed expired jobs and idempotency records");
      startRound("retention round", { startTime, attributes: { "lucius.jobs.removed": jobs, "lucius.idempotency.removed": keys } }).end();
    }
    return { jobs, keys };
  }

  return {
    tick,
    async chore() {
      const { jobs, keys } = await tick();
      return { full: jobs >= options.batchSize || keys >= options.batchSize };
    },
  };
}
