/**
 * Bulk redrive (docs/API.md, "Bulk redrive"): an operator names a filter, the service answers at
 * once with an operation, and a background loop on every replica works the operations: one
 * replica at a time holds an operation's lease, reads the jobs that ended in its range a page at
 * a time (through the ended-jobs index), redrives those that match, and saves its progress with
 * the lease renewed. A replica that dies leaves the lease to run out, and another takes over
 * from the last saved page. Each redriven job records the operation in the same change
 * (`redrivenBy`), so that a job met again after a takeover is never redriven twice by it.
 */
import { createHash } from "node:crypto";
import type { Caller } from "../auth/caller.ts";
import {
  type BulkFilter,
  type BulkOperation,
  claimOperation,
  isClaimable,
  type JobOutcome,
  MAX_BULK_JOBS,
  matchesBulkFilter,
  newOperation,
  recordPage,
} from "../domain/bulk.ts";
import { ConcurrencyConflictError, DomainError, IdempotencyKeyReusedError, NotFoundError } from "../domain/errors.ts";
import type { RepairService } from "../jobs/repair.ts";
import type { Logger } from "../logging/logger.ts";
import { AGAIN, createLoop, pauseFor } from "../loops/loop.ts";
import type { JobStore } from "../storage/job-store.ts";
import type { OperationStore } from "../storage/operation-store.ts";

export interface BulkRedriveOptions {
  store: JobStore;
  operations: OperationStore;
  repair: Pick<RepairService, "redrive">;
  logger: Logger;
  /** LUCIUS_BULK_REDRIVE_RATE: jobs redriven per second at most, per operation. */
  ratePerSecond: number;
  /** How often a replica without an operation looks for one (LUCIUS_OUTBOX_RETRY_INTERVAL). */
  intervalSeconds: number;
  /** Finished operations are kept this long (LUCIUS_JOB_RETENTION; 0: a week). */
  retentionSeconds: number;
  /** This replica, as named in a lease. */
  owner?: string;
  now?: () => Date;
}

/** How long a lease lasts without renewal: a page takes a few seconds at most, each one renews it. */
export const OPERATION_LEASE_SECONDS = 5;
/** Jobs read per page at most: the unit of progress saved. */
const PAGE = 20;
const DEFAULT_OPERATION_RETENTION_SECONDS = 7 * 86_400;
/** Finished operations are looked for at most this often: an idle replica costs one query a round. */
const PURGE_EVERY_MS = 60_000;

export function createBulkRedrive(options: BulkRedriveOptions) {
  const { store, operations, logger } = options;
  const now = options.now ?? (() => new Date());
  const owner = options.owner ?? `replica-${crypto.randomUUID()}`;
  const pageSize = Math.max(1, Math.min(PAGE, options.ratePerSecond));
  let held: BulkOperation | null = null;
  let lastPurge = 0;

  /** A running operation this replica may work: the one it holds, or one it claims now. */
  async function operationToWork(): Promise<BulkOperation | null> {
    if (held) return held;
    for (const candidate of await operations.listRunning(10)) {
      if (!isClaimable(candidate, now())) continue;
      try {
        held = await operations.save(claimOperation(candidate, owner, now(), OPERATION_LEASE_SECONDS));
        logger.info({ operationId: held.operationId, owner, from: candidate.lease?.owner ?? null }, "bulk redrive: working an operation");
        return held;
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError)) throw error;
        // Another replica claimed it first.
      }
    }
    return null;
  }

  async function redriveOne(operation: BulkOperation, jobId: string): Promise<JobOutcome | null> {
    const aggregate = await store.getJob(jobId);
    if (!aggregate) return null;
    // Redriven by this operation before a takeover (or it ended again since): never twice.
    if (aggregate.job.redrivenBy === operation.operationId) return { jobId, outcome: "skipped", reason: "redriven by this operation already" };
    if (!matchesBulkFilter(aggregate, operation.filter)) return null;
    const caller: Caller = { name: operation.requestedBy, tenants: "*", permissions: new Set(["jobs.operate"]) };
    try {
      await options.repair.redrive(jobId, { operationId: operation.operationId }, caller);
      return { jobId, outcome: "redriven" };
    } catch (error) {
      // The job's own reason (a limit, a map step, a change meanwhile): the operation goes on.
      if (error instanceof DomainError && error.code !== "storage-unavailable") return { jobId, outcome: "skipped", reason: error.code };
      throw error;
    }
  }

  /** One page of the operation: its jobs redriven, its progress saved with the lease renewed. */
  async function workPage(operation: BulkOperation): Promise<void> {
    const to =
      operation.filter.endedBefore !== undefined && operation.filter.endedBefore < operation.createdAt ? operation.filter.endedBefore : operation.createdAt;
    const room = MAX_BULK_JOBS - operation.matched;
    const page = await store.listEndedJobs({ from: operation.filter.endedAfter ?? "", to }, { limit: pageSize, cursor: operation.cursor });
    const outcomes: JobOutcome[] = [];
    let scanned = 0;
    let cursor = page.nextCursor;
    for (const item of page.items) {
      if (outcomes.length >= room) {
        cursor = null;
        break;
      }
      scanned++;
      const outcome = await redriveOne(operation, item.jobId);
      if (outcome) outcomes.push(outcome);
    }
    try {
      const saved = await operations.save(recordPage(operation, { scanned, outcomes, nextCursor: cursor }, now(), OPERATION_LEASE_SECONDS));
      held = saved.status === "running" ? saved : null;
      if (!held)
        logger.info(
          { operationId: saved.operationId, matched: saved.matched, redriven: saved.redriven, skipped: saved.skipped },
          "bulk redrive: operation finished",
        );
    } catch (error) {
      held = null;
      // Our lease ran out and another replica took over: it goes on from its own reading.
      if (!(error instanceof ConcurrencyConflictError)) throw error;
    }
  }

  const retentionSeconds = options.retentionSeconds > 0 ? options.retentionSeconds : DEFAULT_OPERATION_RETENTION_SECONDS;
  const loop = createLoop({
    name: "bulk redrive",
    errorPauseMs: options.intervalSeconds * 1000,
    logger,
    async round() {
      const operation = await operationToWork();
      if (!operation) {
        if (Date.now() - lastPurge >= PURGE_EVERY_MS) {
          lastPurge = Date.now();
          await operations.purgeFinished(new Date(now().getTime() - retentionSeconds * 1000), 100);
        }
        return pauseFor(options.intervalSeconds * 1000);
      }
      const started = Date.now();
      await workPage(operation);
      if (!held) return AGAIN;
      // The rate: a page of `pageSize` jobs per pageSize / rate seconds.
      const budgetMs = (pageSize / options.ratePerSecond) * 1000;
      const spent = Date.now() - started;
      return spent >= budgetMs ? AGAIN : pauseFor(budgetMs - spent);
    },
  });

  return {
    owner,
    /**
     * Starts an operation (answered at once; the loop works it). The same Idempotency-Key answers
     * the operation it started first; with another filter, 422.
     */
    async submit(filter: BulkFilter, idempotencyKey: string | null, caller: Caller): Promise<{ operation: BulkOperation; created: boolean }> {
      const operationId =
        idempotencyKey === null ? `op-${crypto.randomUUID()}` : `op-${createHash("sha256").update(idempotencyKey).digest("hex").slice(0, 32)}`;
      const result = await operations.create(newOperation({ operationId, idempotencyKey, filter, requestedBy: caller.name, now: now() }));
      if (!result.created && JSON.stringify(result.operation.filter) !== JSON.stringify(filter)) {
        throw new IdempotencyKeyReusedError("this idempotency key started an operation with a different filter");
      }
      loop.wakeBy(Date.now());
      return result;
    },

    async get(operationId: string): Promise<BulkOperation> {
      const operation = await operations.get(operationId);
      if (!operation) throw new NotFoundError(`operation ${operationId} does not exist`);
      return operation;
    },

    start: () => loop.start(),
    stop: () => loop.stop(),
  };
}

export type BulkRedrive = ReturnType<typeof createBulkRedrive>;
