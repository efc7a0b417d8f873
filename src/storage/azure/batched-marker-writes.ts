/**
 * Writes to index tables (due, deadline and retention markers, listing rows) grouped per
 * partition into entity-group transactions of up to 100 changes: under load, one call carries the
 * changes of many jobs instead of one each (Azure bills a transaction as one call).
 *
 * Two kinds of change:
 * - `write`: awaited (a marker that must exist before the row it points at). It goes at once when
 *   no transaction of its partition is in flight, else with the next one, which leaves as soon as
 *   the one in flight returns: a group commit, no wait added at a light load.
 * - `defer`: may follow its rows (deletes of markers whose entries ended, moves of leased
 *   entries' markers). It waits up to DEFER_MS for company, or rides with the next write.
 *
 * A `create` (an idempotency claim, a listing row) rides the same way; a batch with a row already
 * there fails whole and is replayed one by one, each claim then learning its own answer.
 *
 * The last change queued for a row wins, as if the two had been sent one after the other (an
 * awaited write replaced by a later change resolves when that change is stored). A transaction
 * that fails on one change's row (a delete of a marker already gone, a claim of a row taken) is
 * replayed one change at a time; any other failure rejects the callers of all its changes. A
 * deferred change that fails is left for the sweeps.
 */
import type { TableClient } from "@azure/data-tables";
import { alreadyExists, deleteIfPresent, insertIfAbsent, isMissing } from "./client.ts";
import { MAX_TRANSACTION_OPERATIONS } from "./limits.ts";

/** Deferred changes wait at most this long for others of their partition to share a transaction. */
const DEFER_MS = 20;

/** A marker row: its keys and whatever it records. */
export type MarkerRow = { partitionKey: string; rowKey: string } & Record<string, unknown>;

/** A `create` inserts unless the row exists (a claim): its write answers false when the row was there. */
export type MarkerChange = ["delete", { partitionKey: string; rowKey: string }] | ["upsert", MarkerRow, "Merge" | "Replace"] | ["create", MarkerRow];

interface Waiter {
  resolve(stored: boolean): void;
  reject(error: unknown): void;
}

interface Queued {
  change: MarkerChange;
  waiters: Waiter[];
}

interface PartitionQueue {
  queued: Map<string, Queued>;
  /** A transaction of this partition is in flight: the next one waits for it (one at a time keeps the order of changes to a row). */
  sending: boolean;
}

export interface BatchedMarkerWrites {
  /** Stores a change; resolves once it is stored (false: a `create` found the row there), rejects with the storage's error. */
  write(change: MarkerChange): Promise<boolean>;
  /** Queues a change that may follow its rows; best effort. */
  defer(change: MarkerChange): void;
  /** Sends what is queued now and waits for it and for what was in flight (not for what is queued meanwhile: under steady traffic that would never end). */
  flush(): Promise<void>;
}

export function createBatchedMarkerWrites(client: TableClient): BatchedMarkerWrites {
  const partitions = new Map<string, PartitionQueue>();
  const inFlight = new Set<Promise<void>>();
  let timer: ReturnType<typeof setTimeout> | undefined;

  function enqueue(change: MarkerChange, waiter: Waiter | null): void {
    const { partitionKey, rowKey } = change[1];
    let partition = partitions.get(partitionKey);
    if (!partition) {
      partition = { queued: new Map(), sending: false };
      partitions.set(partitionKey, partition);
    }
    const earlier = partition.queued.get(rowKey);
    if (earlier && (change[0] === "create" || earlier.change[0] === "create")) {
      // Two claims of one row must not merge (both would win): this one goes alone, now, ahead of
      // the queued one. Safe because no caller changes a row it is still claiming: claims race
      // only with claims, and a listing row is restated only once its create has answered.
      const alone = applyOne(change).then(
        (stored) => waiter?.resolve(stored),
        (error: unknown) => waiter?.reject(error),
      );
      inFlight.add(alone);
      void alone.finally(() => inFlight.delete(alone));
      return;
    }
    const waiters = earlier?.waiters ?? [];
    if (waiter) waiters.push(waiter);
    partition.queued.set(rowKey, { change, waiters });
    if (waiters.length > 0 || partition.queued.size >= MAX_TRANSACTION_OPERATIONS) send(partitionKey);
    else timer ??= setTimeout(sendAll, DEFER_MS);
  }

  function sendAll(): void {
    timer = undefined;
    for (const partitionKey of [...partitions.keys()]) send(partitionKey);
  }

  function send(partitionKey: string): void {
    const partition = partitions.get(partitionKey);
    if (!partition || partition.sending || partition.queued.size === 0) return;
    const batch: Queued[] = [];
    for (const [rowKey, queued] of partition.queued) {
      if (batch.length === MAX_TRANSACTION_OPERATIONS) break;
      batch.push(queued);
      partition.queued.delete(rowKey);
    }
    partition.sending = true;
    const sending = submit(batch).finally(() => {
      inFlight.delete(sending);
      partition.sending = false;
      const awaited = [...partition.queued.values()].some((q) => q.waiters.length > 0);
      if (awaited || partition.queued.size >= MAX_TRANSACTION_OPERATIONS) send(partitionKey);
      else if (partition.queued.size > 0) timer ??= setTimeout(sendAll, DEFER_MS);
      else partitions.delete(partitionKey);
    });
    inFlight.add(sending);
  }

  async function submit(batch: Queued[]): Promise<void> {
    if (batch.length > 1) {
      try {
        await client.submitTransaction(batch.map((q) => q.change));
        for (const q of batch) for (const waiter of q.waiters) waiter.resolve(true);
        return;
      } catch (error) {
        // One change's row (a delete's gone, a claim's taken) fails the whole: replayed one by one
        // below, the others are stored still. Any other failure (throttled, down) is every
        // change's: told to their callers, not multiplied into a hundred calls to a busy partition.
        if (!isMissing(error) && !alreadyExists(error)) {
          for (const q of batch) for (const waiter of q.waiters) waiter.reject(error);
          return;
        }
      }
    }
    await Promise.all(
      batch.map(async (q) => {
        try {
          const stored = await applyOne(q.change);
          for (const waiter of q.waiters) waiter.resolve(stored);
        } catch (error) {
          for (const waiter of q.waiters) waiter.reject(error);
        }
      }),
    );
  }

  async function applyOne(change: MarkerChange): Promise<boolean> {
    if (change[0] === "create") return (await insertIfAbsent(client, change[1])).inserted;
    if (change[0] === "delete") await deleteIfPresent(client, change[1].partitionKey, change[1].rowKey);
    else await client.upsertEntity(change[1], change[2]);
    return true;
  }

  return {
    write: (change) => new Promise<boolean>((resolve, reject) => enqueue(change, { resolve, reject })),

    defer(change) {
      enqueue(change, null);
    },

    async flush() {
      clearTimeout(timer);
      timer = undefined;
      const queuedNow: Promise<void>[] = [];
      for (const partition of partitions.values()) {
        for (const queued of partition.queued.values()) {
          queuedNow.push(new Promise<void>((resolve) => queued.waiters.push({ resolve: () => resolve(), reject: () => resolve() })));
        }
      }
      const running = [...inFlight];
      sendAll();
      await Promise.allSettled([...running, ...queuedNow]);
    },
  };
}
