/** Bulk operations in process (LUCIUS_STORAGE_BACKEND=memory): one replica, the same rules as on Azure. */
import type { BulkOperation } from "../../domain/bulk.ts";
import { ConcurrencyConflictError } from "../../domain/errors.ts";
import type { OperationStore } from "../operation-store.ts";

export function createMemoryOperationStore(): OperationStore {
  const operations = new Map<string, BulkOperation>();
  let version = 0;
  const stamp = (operation: BulkOperation): BulkOperation => structuredClone({ ...operation, etag: `W/"${++version}"` });
  return {
    async init() {},
    async create(operation) {
      const existing = operations.get(operation.operationId);
      if (existing) return { created: false, operation: structuredClone(existing) };
      const stored = stamp(operation);
      operations.set(operation.operationId, stored);
      return { created: true, operation: structuredClone(stored) };
    },
    async get(operationId) {
      const stored = operations.get(operationId);
      return stored ? structuredClone(stored) : null;
    },
    async listRunning(limit) {
      return [...operations.values()]
        .filter((o) => o.status === "running")
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
        .slice(0, limit)
        .map((o) => structuredClone(o));
    },
    async save(operation) {
      const stored = operations.get(operation.operationId);
      if (!stored || stored.etag !== operation.etag) throw new ConcurrencyConflictError(`operation ${operation.operationId} was changed by another writer`);
      const saved = stamp(operation);
      operations.set(operation.operationId, saved);
      return structuredClone(saved);
    },
    async purgeFinished(finishedBefore, limit) {
      const cutoff = finishedBefore.toISOString();
      let removed = 0;
      for (const [id, operation] of operations) {
        if (removed >= limit) break;
        if (operation.finishedAt !== null && operation.finishedAt < cutoff) {
          operations.delete(id);
          removed++;
        }
      }
      return removed;
    },
  };
}
