/**
 * Index markers that may follow the rows they point at (deletes of markers whose entries or steps
 * ended, moves of leased entries' markers), sent in batches.
 */
import type { TableClient } from "@azure/data-tables";
import { deleteIfPresent } from "./client.ts";
import { MAX_TRANSACTION_OPERATIONS } from "./limits.ts";

/** Deferred marker changes wait at most this long for others of their shard to share a transaction. */
const DEFER_MS = 20;

/** A marker row: its keys and whatever it records. */
export type MarkerRow = { partitionKey: string; rowKey: string } & Record<string, unknown>;

type MarkerAction = ["delete", { partitionKey: string; rowKey: string }] | ["upsert", MarkerRow, "Merge"];

/**
 * Marker changes that may follow their entries' writes, grouped per partition (shard) into
 * entity-group transactions of up to 100: during a drain, one call per hundred entries instead of
 * one each. The last change queued for a marker wins. A transaction that fails (a delete of a
 * marker already gone fails it whole) is replayed one change at a time; what still fails is left
 * for the sweeps to clean.
 */
export function createDeferredMarkerWrites(client: TableClient) {
  const queued = new Map<string, Map<string, MarkerAction>>();
  const inFlight = new Set<Promise<void>>();
  let timer: ReturnType<typeof setTimeout> | undefined;

  function enqueue(partitionKey: string, rowKey: string, action: MarkerAction): void {
    const partition = queued.get(partitionKey) ?? new Map<string, MarkerAction>();
    partition.set(rowKey, action);
    queued.set(partitionKey, partition);
    if (partition.size >= MAX_TRANSACTION_OPERATIONS) send(partitionKey);
    else timer ??= setTimeout(sendAll, DEFER_MS);
  }

  function sendAll(): void {
    timer = undefined;
    for (const partitionKey of [...queued.keys()]) send(partitionKey);
  }

  function send(partitionKey: string): void {
    const partition = queued.get(partitionKey);
    if (!partition) return;
    queued.delete(partitionKey);
    const actions = [...partition.values()];
    for (let i = 0; i < actions.length; i += MAX_TRANSACTION_OPERATIONS) {
      const chunk = actions.slice(i, i + MAX_TRANSACTION_OPERATIONS);
      const sending: Promise<void> = client
        .submitTransaction(chunk)
        .then(
          () => {},
          () => replayOneByOne(chunk),
        )
        .finally(() => inFlight.delete(sending));
      inFlight.add(sending);
    }
  }

  async function replayOneByOne(actions: MarkerAction[]): Promise<void> {
    await Promise.allSettled(
      actions.map(([kind, entity]) => (kind === "delete" ? deleteIfPresent(client, entity.partitionKey, entity.rowKey) : client.upsertEntity(entity, "Merge"))),
    );
  }

  return {
    delete(partitionKey: string, rowKey: string): void {
      enqueue(partitionKey, rowKey, ["delete", { partitionKey, rowKey }]);
    },
    upsert(marker: MarkerRow): void {
      enqueue(marker.partitionKey, marker.rowKey, ["upsert", marker, "Merge"]);
    },
    cancel(partitionKey: string, rowKey: string): void {
      queued.get(partitionKey)?.delete(rowKey);
    },
    /** Sends what is queued and waits for it and for what was in flight (not for what is queued meanwhile: under steady traffic that would never end). */
    async flush(): Promise<void> {
      clearTimeout(timer);
      sendAll();
      await Promise.allSettled([...inFlight]);
    },
  };
}
