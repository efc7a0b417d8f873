import { dueIndexTable, type Settings } from "../config/settings.ts";
import { createLedgerStore } from "./ledger-store.ts";
import { createMemoryStore } from "./memory-store.ts";
import type { LedgerStore } from "./store.ts";
import { createTableStore } from "./table-store.ts";

/** The only place that knows the concrete storage adapters. */
export function createStore(settings: Settings): LedgerStore {
  const { tables, tableConnection } = settings;
  switch (settings.storageBackend) {
    case "memory":
      return createMemoryStore();
    case "table":
      return createTableStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.outbox) } });
    case "ledger":
      return createLedgerStore({ connection: tableConnection!, tables: { ...tables, due: dueIndexTable(tables.ledger) } });
  }
}
