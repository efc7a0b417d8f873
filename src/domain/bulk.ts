/**
 * Bulk operations (a redrive of every job a filter matches), as plain data and pure functions:
 * which jobs match, and how an operation's progress and lease move. The runner that works them
 * is src/admin/bulk-redrive.ts.
 */

import { isCompensation } from "./graph.ts";
import type { JobAggregate, Versioned } from "./model.ts";

/** Jobs a bulk redrive matches at most (the bound: one operation, one bounded piece of work). */
export const MAX_BULK_JOBS = 10_000;
/** Ended-job markers one operation reads at most, matching or not: what a broad filter may cost. */
export const MAX_BULK_SCANNED = 100_000;
/** Skipped jobs named in an operation (the rest are counted by reason). */
export const MAX_SKIPPED_NAMED = 100;

export interface BulkFilter {
  tenantId?: string;
  requestType?: string;
  /** failed, cancelled, or both (absent). */
  status?: "failed" | "cancelled";
  /** Ended at or after / before (ISO 8601). */
  endedAfter?: string;
  endedBefore?: string;
  /** The error code of the step that failed the job. */
  errorCode?: string;
}

export type OperationStatus = "running" | "succeeded";

export interface BulkOperation extends Versioned {
  operationId: string;
  kind: "redrive";
  /** The Idempotency-Key it was started with, if any: the same key answers the same operation. */
  idempotencyKey: string | null;
  filter: BulkFilter;
  /** Who started it (the admin key's or token's name): the redriven jobs' histories name it. */
  requestedBy: string;
  status: OperationStatus;
  /** Where the scan of ended jobs stands (opaque to all but the store); null before the first page. */
  cursor: string | null;
  scanned: number;
  matched: number;
  redriven: number;
  skipped: number;
  /** Skipped jobs by reason, and the first MAX_SKIPPED_NAMED of them by id. */
  skippedReasons: Record<string, number>;
  skippedJobs: { jobId: string; reason: string }[];
  /** The replica working it and until when; another replica takes it over once that has passed. */
  lease: { owner: string; until: string } | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

export function newOperation(fields: {
  operationId: string;
  idempotencyKey: string | null;
  filter: BulkFilter;
  requestedBy: string;
  now: Date;
}): BulkOperation {
  const at = fields.now.toISOString();
  return {
    operationId: fields.operationId,
    kind: "redrive",
    idempotencyKey: fields.idempotencyKey,
    filter: fields.filter,
    requestedBy: fields.requestedBy,
    status: "running",
    cursor: null,
    scanned: 0,
    matched: 0,
    redriven: 0,
    skipped: 0,
    skippedReasons: {},
    skippedJobs: [],
    lease: null,
    createdAt: at,
    updatedAt: at,
    finishedAt: null,
  };
}

/** Whether a job read back is one the filter asks for (it may have changed since its marker was written). */
export function matchesBulkFilter(aggregate: JobAggregate, filter: BulkFilter): boolean {
  const { job } = aggregate;
  if (job.status !== "failed" && job.status !== "cancelled") return false;
  if (filter.status !== undefined && job.status !== filter.status) return false;
  if (filter.tenantId !== undefined && job.tenantId !== filter.tenantId) return false;
  if (filter.requestType !== undefined && job.requestType !== filter.requestType) return false;
  if (filter.endedAfter !== undefined && job.updatedAt < filter.endedAfter) return false;
  if (filter.endedBefore !== undefined && job.updatedAt >= filter.endedBefore) return false;
  if (filter.errorCode !== undefined) {
    const failing = aggregate.steps.find((s) => s.status === "failed" && !isCompensation(undefined, s));
    if (failing?.error?.code !== filter.errorCode) return false;
  }
  return true;
}

/** An operation that another replica may take: running, and nobody's lease in force. */
export function isClaimable(operation: BulkOperation, now: Date): boolean {
  return operation.status === "running" && (operation.lease === null || operation.lease.until <= now.toISOString());
}

export function claimOperation(operation: BulkOperation, owner: string, now: Date, leaseSeconds: number): BulkOperation {
  return { ...operation, lease: { owner, until: new Date(now.getTime() + leaseSeconds * 1000).toISOString() }, updatedAt: now.toISOString() };
}

export type JobOutcome = { jobId: string; outcome: "redriven" } | { jobId: string; outcome: "skipped"; reason: string };

/** A page of the scan worked: counts added, the cursor moved, the lease renewed; the end when no page follows. */
export function recordPage(
  operation: BulkOperation,
  page: { scanned: number; outcomes: JobOutcome[]; nextCursor: string | null },
  now: Date,
  leaseSeconds: number,
): BulkOperation {
  const at = now.toISOString();
  const skippedReasons = { ...operation.skippedReasons };
  const skippedJobs = [...operation.skippedJobs];
  let { redriven, skipped } = operation;
  for (const outcome of page.outcomes) {
    if (outcome.outcome === "redriven") redriven++;
    else {
      skipped++;
      skippedReasons[outcome.reason] = (skippedReasons[outcome.reason] ?? 0) + 1;
      if (skippedJobs.length < MAX_SKIPPED_NAMED) skippedJobs.push({ jobId: outcome.jobId, reason: outcome.reason });
    }
  }
  const matched = operation.matched + page.outcomes.length;
  const scanned = operation.scanned + page.scanned;
  const done = page.nextCursor === null || matched >= MAX_BULK_JOBS || scanned >= MAX_BULK_SCANNED;
  return {
    ...operation,
    cursor: page.nextCursor,
    scanned,
    matched,
    redriven,
    skipped,
    skippedReasons,
    skippedJobs,
    status: done ? "succeeded" : "running",
    lease: done || operation.lease === null ? null : { owner: operation.lease.owner, until: new Date(now.getTime() + leaseSeconds * 1000).toISOString() },
    updatedAt: at,
    finishedAt: done ? at : null,
  };
}
