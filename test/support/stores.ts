/** A fresh, empty store of each backend, for tests that run on all three. */

import { azurite, freshTables } from "../../dev/azurite.ts";
import { createMultiTableStore } from "../../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

export type Backend = "memory" | "table" | "ledger";

/** Memory in process; `table` and `ledger` on fresh tables of the shared Azurite. */
export async function storeFor(backend: Backend): Promise<JobStore> {
  if (backend === "memory") return createMemoryStore();
  const { connection } = await azurite();
  const options = { connection, tables: freshTables() };
  return backend === "table" ? createMultiTableStore(options) : createSingleTableStore(options);
}
