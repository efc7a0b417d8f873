/** A fresh, empty store of each backend, for tests that run on all three. */

import { azurite, freshTables } from "../../dev/azurite.ts";
import { dueIndexTable, ttlIndexTable } from "../../src/config/settings.ts";
import { MAX_TRANSACTION_OPERATIONS } from "../../src/storage/azure/limits.ts";
import { createMultiTableStore } from "../../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";
import { withRecentJobs } from "../../src/storage/recent-jobs.ts";

export type Backend = "memory" | "table" | "ledger";

/** Memory in process; `table` and `ledger` on fresh tables of the shared Azurite. */
export async function storeFor(backend: Backend): Promise<JobStore> {
  if (backend === "memory") return createMemoryStore();
  const { connection } = await azurite();
  const options = { connection, tables: freshTables() };
  // As the service makes it (create-store.ts): `ledger` keeps the jobs it saw.
  return backend === "table"
    ? createMultiTableStore(options)
    : withRecentJobs(createSingleTableStore(options), { maxRowsPerChange: MAX_TRANSACTION_OPERATIONS });
}

/**
 * A fresh `ledger` on the shared Azurite, as service processes are pointed at it: their settings,
 * and a store on the same tables (its indexes named from the ledger table, as the service names them).
 */
export async function sharedLedger() {
  const { connection } = await azurite();
  const tables = freshTables();
  return {
    env: {
      LUCIUS_STORAGE_BACKEND: "ledger",
      LUCIUS_TABLE_CONNECTION: connection,
      LUCIUS_LEDGER_TABLE: tables.ledger,
      LUCIUS_IDEMPOTENCY_TABLE: tables.idempotency,
      LUCIUS_JOB_INDEX_TABLE: tables.jobIndex,
      LUCIUS_OPERATIONS_TABLE: tables.operations,
    },
    store: createSingleTableStore({ connection, tables: { ...tables, due: dueIndexTable(tables.ledger), ttl: ttlIndexTable(tables.ledger) } }),
  };
}
