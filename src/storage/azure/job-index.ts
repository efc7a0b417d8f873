/**
 * The per-tenant job listing of both Azure layouts: one row per job, row key the job id inverted
 * (time-ordered, newest first). A tenant's rows spread over `buckets` partitions
 * (`<tenant>~<n>`, n from the job id), so that one busy tenant does not make one hot partition;
 * a listing reads every bucket from the cursor on and merges them by row key, so pages stay
 * newest first with stable cursors. With one bucket the partition is the tenant itself (the
 * layout before buckets).
 *
 * The bucket count is recorded in the table (recorded-count.ts); a table from before buckets is
 * the one-bucket layout.
 */
import { odata, type TableClient } from "@azure/data-tables";
import type { Job, JobFilter, JobSummary, Page } from "../../domain/model.ts";
import { encodeCursor, readCursor } from "../cursor.ts";
import type { PageRequest } from "../job-store.ts";
import { createBatchedMarkerWrites } from "./batched-marker-writes.ts";
import { deleteIfPresent, guarded, queryAll } from "./client.ts";
import { shardOf } from "./due-index.ts";
import { entityToSummary, indexRowKey, keysOf, summaryToEntity } from "./entities.ts";
import { LAYOUT_PARTITION, recordedCount } from "./recorded-count.ts";

export interface JobIndex {
  /** Reads (or, on a new table, records) the bucket count; refuses a count the table was not written with. */
  init(): Promise<void>;
  /**
   * Lists a job unless it is listed already (a replay must not restate an older job with its own
   * time), grouped with the tenant's other listing writes; true when this call wrote the row.
   */
  write(job: Job): Promise<boolean>;
  /** Writes the row from the job as stored, over whatever is there. */
  restate(job: Job): Promise<void>;
  list(tenantId: string, page: PageRequest, filter?: JobFilter): Promise<Page<JobSummary>>;
  /** Removes a job's row (retention). */
  remove(tenantId: string, jobId: string): Promise<void>;
}

export interface JobIndexOptions {
  /** LUCIUS_JOB_INDEX_BUCKETS; absent: the recorded count, or DEFAULT_JOB_INDEX_BUCKETS on a new table. */
  buckets?: number | null;
}

/** A bucket takes a quarter of a tenant's index writes: one tenant's ~2,000 jobs/s stay under a partition's limit. */
export const DEFAULT_JOB_INDEX_BUCKETS = 4;

export function createJobIndex(client: TableClient, options: JobIndexOptions = {}): JobIndex {
  let buckets = options.buckets ?? DEFAULT_JOB_INDEX_BUCKETS;
  const partitionOf = (tenantId: string, jobId: string) => (buckets === 1 ? tenantId : `${tenantId}~${shardOf(jobId, buckets)}`);
  const partitionsOf = (tenantId: string) => (buckets === 1 ? [tenantId] : Array.from({ length: buckets }, (_, n) => `${tenantId}~${n}`));
  const entityOf = (job: Job) => ({ ...summaryToEntity(job), partitionKey: partitionOf(job.tenantId, job.jobId) });
  // A busy tenant's restates share calls: a bucket takes a quarter of all its jobs' changes.
  const writes = createBatchedMarkerWrites(client);

  return {
    async init() {
      buckets = await recordedCount(client, {
        name: "job-index",
        configured: options.buckets ?? null,
        forNewTable: DEFAULT_JOB_INDEX_BUCKETS,
        // Rows but no record: written before buckets existed, one partition per tenant.
        before: {
          count: 1,
          hasRows: async () => (await queryAll(client, odata`PartitionKey lt ${LAYOUT_PARTITION}`, { limit: 1, select: ["PartitionKey"] })).length > 0,
        },
        variable: "LUCIUS_JOB_INDEX_BUCKETS",
        tableVariable: "LUCIUS_JOB_INDEX_TABLE",
      });
    },

    async write(job) {
      return guarded("write job index", () => writes.write(["create", entityOf(job)]));
    },

    async remove(tenantId, jobId) {
      await guarded("delete job index row", () => deleteIfPresent(client, partitionOf(tenantId, jobId), indexRowKey(jobId)));
    },

    async restate(job) {
      await guarded("write job index", () => writes.write(["upsert", entityOf(job), "Replace"]));
    },

    async list(tenantId, page, filter = {}) {
      const after = page.cursor === null ? "" : readCursor(page.cursor);
      // Within the tenant's partitions of the index: the cost grows with the tenant's jobs, never the table.
      const narrowed = [
        filter.status === undefined ? "" : odata` and status eq ${filter.status}`,
        filter.paused === undefined ? "" : filter.paused ? " and paused eq true" : " and paused ne true",
        filter.requestType === undefined ? "" : odata` and requestType eq ${filter.requestType}`,
        filter.correlationId === undefined ? "" : odata` and correlationId eq ${filter.correlationId}`,
      ].join("");
      // Each bucket's next rows after the cursor, then the newest of all of them: the page.
      const perBucket = await guarded("list jobs", () =>
        Promise.all(
          partitionsOf(tenantId).map((partition) =>
            queryAll(client, odata`PartitionKey eq ${partition} and RowKey gt ${after}` + narrowed, { limit: page.limit + 1 }),
          ),
        ),
      );
      const rows = perBucket.flat().sort((a, b) => (keysOf(a).rowKey < keysOf(b).rowKey ? -1 : 1));
      const items = rows.slice(0, page.limit);
      return { items: items.map(entityToSummary), nextCursor: rows.length > page.limit ? encodeCursor(keysOf(items.at(-1)!).rowKey) : null };
    },
  };
}
