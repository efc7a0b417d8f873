import { createTableStore } from "../../src/ledger/table-store.ts";
import { azurite, freshTables } from "../support/azurite.ts";
import { describeStoreContract } from "./store-contract.ts";

async function makeStore() {
  const { connection } = await azurite();
  const store = createTableStore({ connection, tables: freshTables(), maxRetries: 0 });
  await store.init();
  return store;
}

describeStoreContract("table (Azurite)", makeStore, { atomicChanges: false });
