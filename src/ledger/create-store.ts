import { dueIndexTable, type Settings } from "../config/settings.ts";
import { createMemoryStore } from "./memory-store.ts";
import type { LedgerStore } from "./store.ts";

/**
 * The only place that knows the concrete storage adapters. The Azure ones are imported only
 * when chosen: their SDK costs a large part of the start in memory mode otherwise.
 */
export async function createStore(settings: Settings): Promise<LedgerStore> {
  const { tables, tableConnection } = settings;
  switch (settings.storageBackend) {
    case "memory":
      return createMemoryStore();
    case "table": {
      const { createTableStore } = await import("./table-store.ts");
      return createTableStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.outbox) } });
    }
    case "ledger": {
      const { createLedgerStore } = await import("./ledger-store.ts");
      return createLedgerStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.ledger) } });
    }
  }
}
