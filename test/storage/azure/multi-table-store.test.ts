import { azurite, freshTables } from "../../../dev/azurite.ts";
import { createMultiTableStore } from "../../../src/storage/azure/multi-table-store.ts";
import { describeStoreContract } from "../job-store-contract.ts";

async function makeStore() {
  const { connection } = await azurite();
  const store = createMultiTableStore({ connection, tables: freshTables(), maxRetries: 0 });
  await store.init();
  return store;
}

describeStoreContract("table (Azurite)", makeStore, { atomicChanges: false });
