import { dueIndexTable, type Settings } from "../config/settings.ts";
import type { JobStore } from "./job-store.ts";
import { createMemoryStore } from "./memory/memory-store.ts";

/**
 * The only place that knows the concrete storage adapters. The Azure ones are imported only
 * when chosen: their SDK costs a large part of the start in memory mode otherwise.
 */
export async function createStore(settings: Settings): Promise<JobStore> {
  const { tables, tableConnection } = settings;
  switch (settings.storageBackend) {
    case "memory":
      return createMemoryStore();
    case "table": {
      const { createMultiTableStore } = await import("./azure/multi-table-store.ts");
      return createMultiTableStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.outbox) } });
    }
    case "ledger": {
      const { createSingleTableStore } = await import("./azure/single-table-store.ts");
      return createSingleTableStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.ledger) } });
    }
  }
}
