/**
 * The per-tenant job listing of both Azure layouts: one row per job, partitioned by tenant, row
 * key the job id (time-ordered, so key order is creation order).
 */
import { odata, type TableClient } from "@azure/data-tables";
import type { Job, JobFilter, JobSummary, Page } from "../../domain/model.ts";
import { encodeCursor, readCursor } from "../cursor.ts";
import type { PageRequest } from "../job-store.ts";
import { deleteIfPresent, guarded, insertIfAbsent, queryAll } from "./client.ts";
import { entityToSummary, indexRowKey, keysOf, summaryToEntity } from "./entities.ts";

export interface JobIndex {
  /**
   * Lists a job unless it is listed already (a replay must not restate an older job with its own
   * time); true when this call wrote the row.
   */
  write(job: Job): Promise<boolean>;
  /** Writes the row from the job as stored, over whatever is there. */
  restate(job: Job): Promise<void>;
  list(tenantId: string, page: PageRequest, filter?: JobFilter): Promise<Page<JobSummary>>;
  /** Removes a job's row (retention). */
  remove(tenantId: string, jobId: string): Promise<void>;
}

export function createJobIndex(client: TableClient): JobIndex {
  return {
    async write(job) {
      return guarded("write job index", async () => (await insertIfAbsent(client, summaryToEntity(job))).inserted);
    },

    async remove(tenantId, jobId) {
      await guarded("delete job index row", () => deleteIfPresent(client, tenantId, indexRowKey(jobId)));
    },

    async restate(job) {
      await guarded("write job index", () => client.upsertEntity(summaryToEntity(job), "Replace"));
    },

    async list(tenantId, page, filter = {}) {
      const after = page.cursor === null ? "" : readCursor(page.cursor);
      // Within the tenant's partition of the index: the cost grows with the tenant's jobs, never the table.
      const narrowed = [
        filter.status === undefined ? "" : odata` and status eq ${filter.status}`,
        filter.paused === undefined ? "" : filter.paused ? " and paused eq true" : " and paused ne true",
        filter.requestType === undefined ? "" : odata` and requestType eq ${filter.requestType}`,
        filter.correlationId === undefined ? "" : odata` and correlationId eq ${filter.correlationId}`,
      ].join("");
      const rows = await guarded("list jobs", () =>
        queryAll(client, odata`PartitionKey eq ${tenantId} and RowKey gt ${after}` + narrowed, { limit: page.limit + 1 }),
      );
      const items = rows.slice(0, page.limit);
      return { items: items.map(entityToSummary), nextCursor: rows.length > page.limit ? encodeCursor(keysOf(items.at(-1)!).rowKey) : null };
    },
  };
}
