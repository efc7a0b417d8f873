import type { Settings } from "../config/settings.ts";
import { createMemoryStore } from "./memory-store.ts";
import type { LedgerStore } from "./store.ts";

export class StoreUnavailableInBuildError extends Error {}

/** The only place that knows the concrete storage adapters. */
export function createStore(settings: Settings): LedgerStore {
  switch (settings.storageBackend) {
    case "memory":
      return createMemoryStore();
    case "table":
    case "ledger":
      throw new StoreUnavailableInBuildError(
        `LUCIUS_STORAGE_BACKEND=${settings.storageBackend}: the Azure Table backends are not part of this build yet; use memory`,
      );
  }
}
