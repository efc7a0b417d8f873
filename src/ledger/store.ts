/**
 * The storage port. Every backend (memory, table, ledger) implements it and passes the same
 * contract suite (test/ledger/store-contract.ts).
 */
import type { IdempotencyRecord, Job, JobAggregate, JobSummary, OutboxEntry, Page, Step } from "../domain/model.ts";

export type ClaimResult = { claimed: true; record: IdempotencyRecord } | { claimed: false; existing: IdempotencyRecord };

export interface PageRequest {
  limit: number;
  /** Opaque, from a previous page's `nextCursor`. */
  cursor: string | null;
}

/** Entities of one job to overwrite, each only if its `etag` still matches the stored one. */
export interface JobChanges {
  job?: Job;
  steps?: Step[];
  outbox?: OutboxEntry[];
}

export interface LedgerStore {
  /** Creates what the backend needs (tables); safe to call on every start. */
  init(): Promise<void>;

  /**
   * Inserts the record unless (tenantId, key) exists; then returns the existing one unchanged.
   * Exactly one of any number of concurrent claims of one key wins.
   */
  claimIdempotencyKey(record: IdempotencyRecord): Promise<ClaimResult>;

  /**
   * Stores a new job with its steps, outbox entries and job index row. Storing the same job id
   * again (a retry after a crash) completes what is missing and changes nothing that exists.
   * Returns the stored entities with their etags.
   */
  createJob(aggregate: JobAggregate): Promise<JobAggregate>;

  getJob(jobId: string): Promise<JobAggregate | null>;

  /** The tenant's jobs from the job index, newest first. */
  listJobs(tenantId: string, page: PageRequest): Promise<Page<JobSummary>>;

  /**
   * Writes the given entities of one job, each conditional on its etag: all of them or, on a
   * stale etag, none (ConcurrencyConflictError). Returns them with their new etags.
   */
  saveChanges(jobId: string, changes: JobChanges): Promise<Required<JobChanges>>;

  /** Throws StorageUnavailableError when the backend does not answer. */
  ping(): Promise<void>;

  close(): Promise<void>;
}

/** Cursors are opaque to clients: base64url of the last key they saw. */
export function encodeCursor(key: string): string {
  return Buffer.from(key, "utf8").toString("base64url");
}

export function decodeCursor(cursor: string): string | null {
  const key = Buffer.from(cursor, "base64url").toString("utf8");
  return encodeCursor(key) === cursor ? key : null;
}
