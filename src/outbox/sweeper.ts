/**
 * The retry loop's unit of work: publish what is due. (The timer, leases between replicas and
 * the operator's view come with the retry-loop issue; this is the part every backend needs.)
 */
import type { LedgerStore } from "../ledger/store.ts";
import type { Dispatcher } from "./dispatcher.ts";

export interface SweepOptions {
  store: LedgerStore;
  dispatcher: Dispatcher;
  batchSize: number;
  now?: Date;
}

/** Publishes up to `batchSize` due entries; resolves with how many it attempted. */
export async function sweepOnce(options: SweepOptions): Promise<number> {
  const due = await options.store.findDueOutbox(options.now ?? new Date(), options.batchSize);
  if (due.length > 0) await options.dispatcher.publishNow(due);
  return due.length;
}
