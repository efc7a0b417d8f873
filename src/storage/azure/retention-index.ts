/**
 * Retention on both Azure layouts: what LUCIUS_JOB_RETENTION and LUCIUS_IDEMPOTENCY_TTL remove is
 * found through markers in a table of their own (`<outbox or ledger table>Ttl`), keyed by time
 * like the deadline index, so a clean-up reads one key range per partition (what expired), never
 * the history nor the markers of open work:
 *
 * - `ended-0`…`ended-3`, row key `<endedAt>_<jobId>`: a job that ended, written before the job
 *   row that ends it (a crash leaves a marker of a job that has not ended: the clean-up drops it);
 * - `keys-0`…`keys-3`, row key `<createdAt>_<idempotency row key>`: an idempotency record,
 *   written beside its claim.
 *
 * A marker whose job or record changed since (a replaced claim) is dropped when met.
 */
import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import type { IdempotencyRecord, Job } from "../../domain/model.ts";
import { hasJobEnded } from "../../domain/transitions.ts";
import { createBatchedMarkerWrites } from "./batched-marker-writes.ts";
import { deleteIfPresent, guarded, queryAll } from "./client.ts";
import { shardOf } from "./due-index.ts";
import { idempotencyKeys, keysOf } from "./entities.ts";

const SHARDS = 4;

export interface EndedMarker {
  partitionKey: string;
  rowKey: string;
  jobId: string;
  tenantId: string;
  endedAt: string;
}

export interface KeyMarker {
  partitionKey: string;
  rowKey: string;
  tenantId: string;
  key: string;
  createdAt: string;
}

const endedKeys = (job: Pick<Job, "jobId" | "updatedAt">) => ({ partitionKey: `ended-${shardOf(job.jobId, SHARDS)}`, rowKey: `${job.updatedAt}_${job.jobId}` });
function keyMarkerKeys(record: Pick<IdempotencyRecord, "tenantId" | "key" | "createdAt">) {
  const recordKeys = idempotencyKeys(record.tenantId, record.key);
  const id = `${recordKeys.partitionKey}_${recordKeys.rowKey}`;
  return { partitionKey: `keys-${shardOf(id, SHARDS)}`, rowKey: `${record.createdAt}_${id}` };
}

/** Markers of `kind` whose time is before `cutoff`, oldest first, at most `limit` (per shard, then merged). */
async function markersBefore(client: TableClient, kind: "ended" | "keys", cutoff: string, limit: number) {
  const rows = await Promise.all(
    Array.from({ length: SHARDS }, (_, shard) =>
      guarded("read retention markers", () =>
        queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${`${kind}-${shard}`} and RowKey lt ${cutoff}`, { limit }),
      ),
    ),
  );
  return rows
    .flat()
    .sort((a, b) => keysOf(a).rowKey.localeCompare(keysOf(b).rowKey))
    .slice(0, limit);
}

export function createRetentionIndex(client: TableClient) {
  // Markers of many jobs share a call under load: a shard takes every job's marker.
  const writes = createBatchedMarkerWrites(client);
  return {
    /** Before writing a job row: a marker when the write ends the job. */
    async markEnded(job: Job | undefined): Promise<void> {
      if (!job || !hasJobEnded(job)) return;
      await guarded("write retention marker", () =>
        writes.write(["upsert", { ...endedKeys(job), jobId: job.jobId, tenantId: job.tenantId, endedAt: job.updatedAt }, "Replace"]),
      );
    },

    /** Beside a claim: the marker that lets the record expire. */
    async markKey(record: IdempotencyRecord): Promise<void> {
      await guarded("write retention marker", () =>
        writes.write(["upsert", { ...keyMarkerKeys(record), tenantId: record.tenantId, key: record.key, createdAt: record.createdAt }, "Replace"]),
      );
    },

    async endedBefore(cutoff: Date, limit: number): Promise<EndedMarker[]> {
      return (await markersBefore(client, "ended", cutoff.toISOString(), limit)).map((row: TableEntityResult<Record<string, unknown>>) => ({
        ...keysOf(row),
        jobId: String(row.jobId),
        tenantId: String(row.tenantId),
        endedAt: String(row.endedAt),
      }));
    },

    async keysBefore(cutoff: Date, limit: number): Promise<KeyMarker[]> {
      return (await markersBefore(client, "keys", cutoff.toISOString(), limit)).map((row: TableEntityResult<Record<string, unknown>>) => ({
        ...keysOf(row),
        tenantId: String(row.tenantId),
        key: String(row.key),
        createdAt: String(row.createdAt),
      }));
    },

    /** Markers of jobs that ended in [from, to), after the one keyed `after`, in the order they ended: one range per shard, merged. */
    async endedBetween(from: string, to: string, after: string | null, limit: number): Promise<{ markers: EndedMarker[]; more: boolean }> {
      const start = after !== null && after >= from ? after : from;
      const rows = await Promise.all(
        Array.from({ length: SHARDS }, (_, shard) =>
          guarded("read retention markers", () =>
            queryAll<Record<string, unknown>>(
              client,
              `${odata`PartitionKey eq ${`ended-${shard}`} and RowKey lt ${to}`} and ${after !== null && after >= from ? odata`RowKey gt ${start}` : odata`RowKey ge ${start}`}`,
              { limit: limit + 1 },
            ),
          ),
        ),
      );
      const merged = rows.flat().sort((a, b) => keysOf(a).rowKey.localeCompare(keysOf(b).rowKey));
      return {
        markers: merged
          .slice(0, limit)
          .map((row) => ({ ...keysOf(row), jobId: String(row.jobId), tenantId: String(row.tenantId), endedAt: String(row.endedAt) })),
        more: merged.length > limit,
      };
    },

    async drop(marker: { partitionKey: string; rowKey: string }): Promise<void> {
      await guarded("delete retention marker", () => deleteIfPresent(client, marker.partitionKey, marker.rowKey));
    },
  };
}

export type RetentionIndex = ReturnType<typeof createRetentionIndex>;
