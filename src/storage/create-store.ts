import { changeFeedTable, dueIndexTable, type Settings, SettingsError, ttlIndexTable } from "../config/settings.ts";
import type { ChangeFeed } from "./change-feed.ts";
import type { JobStore } from "./job-store.ts";
import { createMemoryStore } from "./memory/memory-store.ts";
import { createMemoryOperationStore } from "./memory/operation-store.ts";
import type { OperationStore } from "./operation-store.ts";
import { withRecentJobs } from "./recent-jobs.ts";

/**
 * The only place that knows the concrete storage adapters. The Azure ones are imported only
 * when chosen: their SDK costs a large part of the start in memory mode otherwise.
 */
export async function createStore(settings: Settings): Promise<JobStore> {
  const { tables, tableConnection } = settings;
  switch (settings.storageBackend) {
    case "memory":
      return createMemoryStore({ maxJobs: settings.memoryMaxJobs });
    case "table": {
      const { createMultiTableStore } = await import("./azure/multi-table-store.ts");
      return refusedAsSettings(() =>
        createMultiTableStore({
          connection: tableConnection!,
          tables: { ...tables, due: dueIndexTable(tables.outbox), ttl: ttlIndexTable(tables.outbox) },
          jobIndexBuckets: settings.jobIndexBuckets,
          deadlineShards: settings.deadlineShards,
        }),
      );
    }
    case "ledger": {
      const [{ createSingleTableStore }, { MAX_TRANSACTION_OPERATIONS }] = await Promise.all([
        import("./azure/single-table-store.ts"),
        import("./azure/limits.ts"),
      ]);
      // Every change of a job lands whole here: a step event may decide against the copy its dispatch left.
      return refusedAsSettings(() =>
        withRecentJobs(
          createSingleTableStore({
            connection: tableConnection!,
            tables: { ...tables, due: dueIndexTable(tables.ledger), ttl: ttlIndexTable(tables.ledger) },
            jobIndexBuckets: settings.jobIndexBuckets,
            deadlineShards: settings.deadlineShards,
          }),
          { maxRowsPerChange: MAX_TRANSACTION_OPERATIONS },
        ),
      );
    }
  }
}

/** The SDK refuses a connection string the settings loader let through: a settings problem all the same. */
function refusedAsSettings<T>(create: () => T): T {
  try {
    return create();
  } catch (error) {
    throw new SettingsError([`LUCIUS_TABLE_CONNECTION: the Azure Tables SDK refused it (${(error as Error).message})`]);
  }
}

/** Where bulk operations are kept: in process for `memory`, their own table on Azure. */
export async function createOperationStore(settings: Settings): Promise<OperationStore> {
  if (settings.storageBackend === "memory") return createMemoryOperationStore();
  const { createAzureOperationStore } = await import("./azure/operation-store.ts");
  return refusedAsSettings(() => createAzureOperationStore({ connection: settings.tableConnection!, table: settings.tables.operations }));
}

/** Where instances tell each other of changes: nowhere on `memory` (one instance), a table on Azure. */
export async function createChangeFeed(settings: Settings): Promise<ChangeFeed | null> {
  if (settings.storageBackend === "memory") return null;
  const { createAzureChangeFeed } = await import("./azure/change-feed.ts");
  const base = settings.storageBackend === "ledger" ? settings.tables.ledger : settings.tables.outbox;
  return refusedAsSettings(() => createAzureChangeFeed({ connection: settings.tableConnection!, table: changeFeedTable(base) }));
}
