/**
 * The storage port of bulk operations (domain/bulk.ts): few rows, each written conditionally on
 * its etag, so that of the replicas racing for one only one works it at a time.
 */
import type { BulkOperation } from "../domain/bulk.ts";

export interface OperationStore {
  init(): Promise<void>;
  /**
   * Stores a new operation; with an idempotency key, the operation first started under it is
   * answered instead (and nothing is stored): `created` says which.
   */
  create(operation: BulkOperation): Promise<{ created: boolean; operation: BulkOperation }>;
  get(operationId: string): Promise<BulkOperation | null>;
  /** Running operations, oldest first, at most `limit`: what the runners look through. */
  listRunning(limit: number): Promise<BulkOperation[]>;
  /** Writes the operation if its etag still matches (else ConcurrencyConflictError); returns it with its new etag. */
  save(operation: BulkOperation): Promise<BulkOperation>;
  /** Removes up to `limit` operations that finished before `finishedBefore`. Returns how many. */
  purgeFinished(finishedBefore: Date, limit: number): Promise<number>;
}
