/** The tables both Azure layouts keep beside a job's rows: idempotency claims, job index, due and deadline indexes. */
import type { TableClient } from "@azure/data-tables";
import type { IdempotencyRecord, JobAggregate, Page } from "../../domain/model.ts";
import { hasJobEnded } from "../../domain/transitions.ts";
import { encodeCursor, readCursor } from "../cursor.ts";
import type { PageRequest } from "../job-store.ts";
import { type AzureTableOptions, createTableClient } from "./client.ts";
import { createDeadlineIndex, type DeadlineIndex } from "./deadline-index.ts";
import { createDueIndex, type DueIndex } from "./due-index.ts";
import { type ClaimOutcome, createIdempotencyClaims, type IdempotencyClaims } from "./idempotency-claims.ts";
import { createJobIndex, type JobIndex } from "./job-index.ts";
import { createRetentionIndex, type RetentionIndex } from "./retention-index.ts";

export interface SideTableNames {
  idempotency: string;
  jobIndex: string;
  /** The due-entry and deadline indexes (see dueIndexTable in config/settings.ts). */
  due: string;
  /** The retention index (see ttlIndexTable). */
  ttl: string;
}

export interface SideTables {
  claims: IdempotencyClaims;
  jobIndex: JobIndex;
  due: DueIndex;
  /** Step deadlines: markers in the due-index table, partitions of their own. */
  deadlines: DeadlineIndex;
  /** Ended jobs and idempotency records by age: markers in the retention-index table. */
  retention: RetentionIndex;
  /** Their clients, for creating the tables at start. */
  clients: TableClient[];
}

export function createSideTables(names: SideTableNames, options: AzureTableOptions): SideTables {
  const clients = [names.idempotency, names.jobIndex, names.due, names.ttl].map((name) => createTableClient(name, options));
  const [idempotency, jobIndex, due, ttl] = clients as [TableClient, TableClient, TableClient, TableClient];
  return {
    claims: createIdempotencyClaims(idempotency),
    jobIndex: createJobIndex(jobIndex, { buckets: options.jobIndexBuckets ?? null }),
    due: createDueIndex(due),
    deadlines: createDeadlineIndex(due, { shards: options.deadlineShards ?? null }),
    retention: createRetentionIndex(ttl),
    clients,
  };
}

/** Sends the index changes still queued: before closing. */
export async function flushSideTables(side: SideTables): Promise<void> {
  await Promise.all([side.due.flush(), side.deadlines.flush()]);
}

/** A due marker whose job does not exist is removed once this old (the job may still be on its way). */
export function orphanGraceMs(options: { orphanGraceSeconds?: number }): number {
  return (options.orphanGraceSeconds ?? 60) * 1000;
}

/**
 * The first step of every Azure intake: claim the idempotency key (when there is one) while the
 * due and deadline markers go in, before their rows. When the key is taken, the markers point at
 * a job that will never be stored: they are removed off the answer's path.
 */
export async function claimAndMark(side: SideTables, aggregate: JobAggregate, claim: IdempotencyRecord | null, keysExpireBefore?: Date): Promise<ClaimOutcome> {
  const [claimed] = await Promise.all([
    claim ? side.claims.claim(claim, keysExpireBefore) : Promise.resolve<ClaimOutcome>({ claimed: true }),
    claim ? side.retention.markKey(claim) : Promise.resolve(),
    side.due.markDue(aggregate.outbox, aggregate.job.createdAt),
    side.deadlines.beforeWrite(aggregate.steps, aggregate.job.createdAt),
    // A job can end as it starts (every step skipped, a map without its list): retention and
    // bulk operations find it by this marker, as they find every other ended job.
    side.retention.markEnded(aggregate.job),
  ]);
  if (!claimed.claimed) {
    void Promise.allSettled(aggregate.outbox.map((entry) => side.due.deleteMarker(entry.outboxId)));
    void side.deadlines.forget(aggregate.steps);
  }
  return claimed;
}

/** Concurrent removals while cleaning up: each is a read and a few deletes. */
const PURGE_CONCURRENCY = 8;

/**
 * Jobs that ended before `endedBefore`, found through the retention markers: each one still as
 * its marker says (ended, at that time) loses its listing row, its idempotency record (when it
 * still points at the job), its failed-entry markers and its rows (`deleteRows`, the job row
 * last); then the marker goes. A purge cut short by a crash is
 * finished by the next one (the marker stays until everything is gone).
 */
export async function purgeEndedJobs(
  side: SideTables,
  endedBefore: Date,
  limit: number,
  layout: { getJob(jobId: string): Promise<JobAggregate | null>; deleteRows(aggregate: JobAggregate): Promise<void> },
): Promise<number> {
  const markers = await side.retention.endedBefore(endedBefore, limit);
  let removed = 0;
  for (let i = 0; i < markers.length; i += PURGE_CONCURRENCY) {
    await Promise.all(
      markers.slice(i, i + PURGE_CONCURRENCY).map(async (marker) => {
        const aggregate = await layout.getJob(marker.jobId);
        const current = aggregate !== null && hasJobEnded(aggregate.job) && aggregate.job.updatedAt === marker.endedAt;
        if (current || aggregate === null) await side.jobIndex.remove(marker.tenantId, marker.jobId);
        if (current) {
          const { tenantId, idempotencyKey, jobId } = aggregate.job;
          // Its key goes with it: a replay must not bring a removed job back.
          if (idempotencyKey !== null) await side.claims.expire(tenantId, idempotencyKey, { jobId });
          await Promise.all(aggregate.outbox.filter((o) => o.status === "failed").map((o) => side.due.deleteFailedMarker(o.outboxId)));
          await layout.deleteRows(aggregate);
          removed++;
        }
        await side.retention.drop(marker);
      }),
    );
  }
  return removed;
}

/** Idempotency records created before `createdBefore`, through their markers; a record re-claimed since stays. */
export async function purgeIdempotencyRecords(side: SideTables, createdBefore: Date, limit: number): Promise<number> {
  const markers = await side.retention.keysBefore(createdBefore, limit);
  let removed = 0;
  for (let i = 0; i < markers.length; i += PURGE_CONCURRENCY) {
    await Promise.all(
      markers.slice(i, i + PURGE_CONCURRENCY).map(async (marker) => {
        if (await side.claims.expire(marker.tenantId, marker.key, { createdAt: marker.createdAt })) removed++;
        await side.retention.drop(marker);
      }),
    );
  }
  return removed;
}

/** Jobs that ended in a range, through the retention markers (see JobStore.listEndedJobs); the cursor is the last marker's key. */
export async function listEndedJobs(
  side: SideTables,
  range: { from: string; to: string },
  page: PageRequest,
): Promise<Page<{ jobId: string; endedAt: string }>> {
  const after = page.cursor === null ? null : readCursor(page.cursor);
  const { markers, more } = await side.retention.endedBetween(range.from, range.to, after, page.limit);
  const last = markers.at(-1);
  return { items: markers.map((m) => ({ jobId: m.jobId, endedAt: m.endedAt })), nextCursor: more && last ? encodeCursor(last.rowKey) : null };
}
