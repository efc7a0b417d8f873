import { createMemoryStore } from "../../src/ledger/memory-store.ts";
import { describeStoreContract } from "./store-contract.ts";

describeStoreContract("memory", async () => createMemoryStore());
