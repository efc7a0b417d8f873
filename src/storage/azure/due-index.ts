/**
 * The due index of both Azure layouts: one marker per pending outbox entry, in a table of its
 * own (`<outbox or ledger table>Due`), spread over partitions `due-0`…`due-3`, plus one marker per
 * failed entry in partition `failed` (the operator's list). Its row key is the outbox id, so
 * writing or deleting a marker needs nothing but the entry; `dueAt` is a property, and a sweep
 * reads only the markers due by now, then the rows they point at by point reads: O(pending), never
 * O(all jobs ever). A marker is written before its entry (a crash leaves an orphan marker, cleaned
 * by the sweep, never an entry nobody finds) and deleted after its entry stops being pending.
 */
import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import type { OutboxEntry, OutboxWork } from "../../domain/model.ts";
import type { DueLease } from "../job-store.ts";
import { createBatchedMarkerWrites } from "./batched-marker-writes.ts";
import { deleteIfPresent, guarded, isMissing, lostConditionalWrite, queryAll, toDomainError } from "./client.ts";
import { keysOf } from "./entities.ts";
import { MAX_TRANSACTION_OPERATIONS } from "./limits.ts";
import { type EntryPointer, READ_CONCURRENCY, type RowLayout, readPointedRows } from "./rows.ts";

const DUE_SHARDS = 4;
const FAILED_PARTITION = "failed";

export interface DueMarker extends EntryPointer {
  partitionKey: string;
  dueAt: string;
  /** When the marker was last written: an orphan is removed only once it is old enough. */
  createdAt: string;
  /** When its entry was created: the age of the oldest pending entry. */
  entryCreatedAt: string;
  /** A sweep's lease on the marker (see takeDueWork), or "" when none: held while `dueAt` is ahead. */
  leaseToken: string;
  etag: string;
}

/** Where a listing of markers resumes: the last marker's keys. */
export interface MarkerPosition {
  partitionKey: string;
  rowKey: string;
}

const isLeased = (entry: OutboxEntry) => entry.status === "pending" && entry.lease !== null;

function toMarker(row: TableEntityResult<Record<string, unknown>>): DueMarker {
  const { partitionKey, rowKey } = keysOf(row);
  return {
    partitionKey,
    jobId: String(row.jobId),
    outboxId: rowKey,
    stepId: String(row.stepId),
    stepIndex: Number(row.stepIndex),
    dueAt: String(row.dueAt ?? ""),
    createdAt: String(row.createdAt),
    entryCreatedAt: String(row.entryCreatedAt ?? row.createdAt),
    leaseToken: typeof row.leaseToken === "string" ? row.leaseToken : "",
    etag: row.etag ?? "",
  };
}

/** A marker a sweep leased whose lease has not run out: its entry is someone's to publish. */
export const isMarkerHeld = (marker: DueMarker, now: string) => marker.leaseToken !== "" && marker.dueAt > now;

/** A stable shard number for a key: markers spread over a few partitions, found again by key alone. */
export function shardOf(key: string, shards: number): number {
  let hash = 0;
  for (let i = 0; i < key.length; i++) hash = (hash * 31 + key.charCodeAt(i)) >>> 0;
  return hash % shards;
}

function dueShard(outboxId: string): string {
  return `due-${shardOf(outboxId, DUE_SHARDS)}`;
}

const PENDING_RANGE = odata`PartitionKey ge ${"due-"} and PartitionKey lt ${"due."}`;

function markerOf(entry: OutboxEntry, now: string) {
  return {
    partitionKey: entry.status === "failed" ? FAILED_PARTITION : dueShard(entry.outboxId),
    rowKey: entry.outboxId,
    jobId: entry.jobId,
    stepId: entry.stepId,
    stepIndex: entry.stepIndex,
    dueAt: entry.nextAttemptAt ?? undefined,
    entryCreatedAt: entry.createdAt,
    createdAt: now,
    // Rewritten for its entry's own due time, a marker is no one's lease any more.
    leaseToken: "",
  };
}

export function createDueIndex(client: TableClient) {
  const writes = createBatchedMarkerWrites(client);
  let rotation = Math.floor(Math.random() * DUE_SHARDS);

  const leased = (marker: DueMarker, until: string, token: string) => ({
    partitionKey: marker.partitionKey,
    rowKey: marker.outboxId,
    dueAt: until,
    leaseToken: token,
  });

  async function leaseChunk(markers: readonly DueMarker[], until: string, token: string): Promise<DueMarker[]> {
    if (markers.length > 1) {
      try {
        const { subResponses } = await client.submitTransaction(
          markers.map((marker) => ["update", leased(marker, until, token), "Merge", { etag: marker.etag }]),
        );
        return markers.map((marker, i) => ({ ...marker, dueAt: until, leaseToken: token, etag: subResponses[i]?.etag ?? "" }));
      } catch (error) {
        // One marker taken or gone refuses the whole transaction: each is tried alone.
        if (!lostConditionalWrite(error)) throw toDomainError(error, "lease due markers");
      }
    }
    const one = await Promise.all(markers.map((marker) => leaseOne(marker, until, token)));
    return one.filter((marker): marker is DueMarker => marker !== null);
  }

  async function leaseOne(marker: DueMarker, until: string, token: string): Promise<DueMarker | null> {
    try {
      const { etag } = await client.updateEntity(leased(marker, until, token), "Merge", { etag: marker.etag });
      return { ...marker, dueAt: until, leaseToken: token, etag: etag ?? "" };
    } catch (error) {
      if (isMissing(error)) return null;
      if (!lostConditionalWrite(error)) throw toDomainError(error, "lease due marker");
      const current = await client.getEntity<Record<string, unknown>>(marker.partitionKey, marker.outboxId).catch(() => null);
      return current?.leaseToken === token ? toMarker(current) : null;
    }
  }

  async function writeMarkers(marked: readonly OutboxEntry[], now: string): Promise<void> {
    await guarded("write outbox markers", () =>
      // Grouped with the other markers of the shard written meanwhile: one call for many jobs under load.
      Promise.all(marked.map((entry) => writes.write(["upsert", markerOf(entry, now), "Merge"]))),
    );
  }

  /** Upserts the markers of pending entries and of failed ones; call before writing the entries. */
  async function markDue(entries: readonly OutboxEntry[], now: string): Promise<void> {
    await writeMarkers(
      entries.filter((e) => (e.status === "pending" && e.nextAttemptAt !== null) || e.status === "failed"),
      now,
    );
  }

  return {
    markDue,

    /** Before writing entries: the markers of pending and failed ones, except leases (see afterWrite). */
    async beforeWrite(entries: readonly OutboxEntry[], now: string): Promise<void> {
      await markDue(
        entries.filter((e) => !isLeased(e)),
        now,
      );
    },

    /**
     * After writing the entries: deletes the markers of entries no longer pending, and moves a
     * leased entry's marker to the lease's end. (A lease only postpones an entry that already
     * has a marker, so its marker may follow the write; written before, a replica that lost the
     * lease race would leave a marker behind for an entry the winner has sent meanwhile.) These
     * changes are queued and sent a hundred to a transaction: one lost leaves a marker that a
     * sweep cleans, never an entry nobody finds.
     */
    afterWrite(entries: readonly OutboxEntry[], now: string): void {
      for (const entry of entries) {
        if (entry.status !== "pending") writes.defer(["delete", { partitionKey: dueShard(entry.outboxId), rowKey: entry.outboxId }]);
        else if (isLeased(entry)) writes.defer(["upsert", markerOf(entry, now), "Merge"]);
      }
    },

    /** Sends what afterWrite queued; before closing, and for tests. */
    flush: () => writes.flush(),

    async deleteMarker(outboxId: string): Promise<void> {
      await guarded("delete due marker", () => deleteIfPresent(client, dueShard(outboxId), outboxId));
    },

    /**
     * A marker this sweep leased whose entry it found no longer pending, removed only if no one
     * wrote it since (If-Match its lease's ETag): an operator's reset of the entry meanwhile
     * writes it afresh, and an unconditional delete landing after would lose the entry.
     */
    async deleteLeasedMarker(marker: DueMarker): Promise<void> {
      try {
        await client.deleteEntity(marker.partitionKey, marker.outboxId, { etag: marker.etag });
      } catch (error) {
        if (!lostConditionalWrite(error)) throw toDomainError(error, "delete due marker");
      }
    },

    /** A marker whose entry is no longer pending, removed with the next batch of its shard (best effort, like afterWrite's). */
    dropMarker(outboxId: string): void {
      writes.defer(["delete", { partitionKey: dueShard(outboxId), rowKey: outboxId }]);
    },

    async deleteFailedMarker(outboxId: string): Promise<void> {
      await guarded("delete failed marker", () => deleteIfPresent(client, FAILED_PARTITION, outboxId));
    },

    /**
     * Up to `wanted` markers due by `now`, earliest first, read shard after shard from a starting
     * shard that moves on with every call and starts at random per instance: replicas sweeping at
     * once mostly read different shards, and no sweep reads more markers than it can use.
     */
    async dueMarkers(now: string, wanted: number): Promise<DueMarker[]> {
      const start = rotation++;
      const markers: DueMarker[] = [];
      for (let i = 0; i < DUE_SHARDS && markers.length < wanted; i++) {
        const shard = `due-${(start + i) % DUE_SHARDS}`;
        const rows = await guarded("read due markers", () =>
          queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${shard} and dueAt le ${now}`, { limit: wanted - markers.length }),
        );
        markers.push(...rows.map(toMarker));
      }
      return markers.sort((a, b) => a.dueAt.localeCompare(b.dueAt));
    },

    /**
     * Leases the given markers for a sweep: each conditional on the ETag it was read with, its
     * due time moved to `until` and `token` stamped, a transaction per shard (a hundred markers
     * in one call). A transaction refused for one marker another sweep took (or that went) is
     * replayed marker by marker; a marker found already carrying `token` is ours (a reply lost,
     * the SDK's retry refused). Returns the markers leased, with their new ETags.
     */
    async leaseMarkers(markers: readonly DueMarker[], until: string, token: string): Promise<DueMarker[]> {
      const byShard = new Map<string, DueMarker[]>();
      for (const marker of markers) byShard.set(marker.partitionKey, [...(byShard.get(marker.partitionKey) ?? []), marker]);
      const leased = await Promise.all(
        [...byShard.values()].flatMap((shard) => chunks(shard, MAX_TRANSACTION_OPERATIONS)).map((chunk) => leaseChunk(chunk, until, token)),
      );
      return leased.flat();
    },

    /**
     * The due marker of one entry leased like leaseMarkers' (read, then a conditional write):
     * false when a sweep holds it or takes it first; true when leased, or when there is none.
     */
    async leaseMarkerOf(outboxId: string, lease: DueLease): Promise<boolean> {
      const row = await client.getEntity<Record<string, unknown>>(dueShard(outboxId), outboxId).catch((error: unknown) => {
        if (isMissing(error)) return null;
        throw toDomainError(error, "read due marker");
      });
      if (!row) return true;
      const marker = toMarker(row);
      if (isMarkerHeld(marker, lease.now.toISOString())) return false;
      return (await leaseOne(marker, lease.until.toISOString(), lease.token)) !== null;
    },

    /** Markers of one kind after a position, in key order: pending (all due shards) or failed. */
    async markersAfter(kind: "pending" | "failed", after: MarkerPosition | null, limit: number): Promise<DueMarker[]> {
      const range = kind === "failed" ? odata`PartitionKey eq ${FAILED_PARTITION}` : PENDING_RANGE;
      const resume = after ? odata` and (PartitionKey gt ${after.partitionKey} or (PartitionKey eq ${after.partitionKey} and RowKey gt ${after.rowKey}))` : "";
      return (await guarded("read outbox markers", () => queryAll<Record<string, unknown>>(client, range + resume, { limit }))).map(toMarker);
    },

    /** Every pending marker (count and oldest entry): O(pending). */
    async pendingMarkers(): Promise<DueMarker[]> {
      return (await guarded("read due markers", () => queryAll<Record<string, unknown>>(client, PENDING_RANGE))).map(toMarker);
    },
  };
}

export type DueIndex = ReturnType<typeof createDueIndex>;

/**
 * The due work behind the markers due by `now`, cleaning as it goes: an orphan marker (its job
 * was never stored) once older than `orphanGraceMs`, a marker of an entry no longer pending, and
 * a marker whose entry was rescheduled (rewritten with the entry's own due time).
 */
export async function findDueWork(
  due: DueIndex,
  layout: RowLayout,
  now: Date,
  limit: number,
  orphanGraceMs: number,
  skip: ReadonlySet<string> = new Set(),
  /** Which of the work found may be handed out now (on `table`: children their map covers); all by default. */
  admit?: (work: readonly OutboxWork[]) => Promise<boolean[]>,
): Promise<OutboxWork[]> {
  const cutoff = now.toISOString();
  // This process's queued marker removals first: a drain's next sweep would otherwise meet the
  // markers of the entries the last one sent, and read each entry again to find it sent.
  await due.flush();
  // The markers of entries the caller publishes already are passed over unread.
  const read = await due.dueMarkers(cutoff, limit * CANDIDATES_PER_ENTRY + skip.size);
  const markers = spread(
    read.filter((marker) => !skip.has(marker.outboxId)),
    limit,
  );
  const work: OutboxWork[] = [];
  const cleanup: Promise<unknown>[] = [];
  for (let i = 0; i < markers.length && work.length < limit; i += READ_CONCURRENCY) {
    const batch = markers.slice(i, i + READ_CONCURRENCY);
    const loaded = await Promise.all(batch.map((marker) => readPointedRows(layout, marker)));
    const found: OutboxWork[] = [];
    batch.forEach((marker, b) => {
      const { job, step, entry } = loaded[b]!;
      if (!job || !entry || !step) {
        // The job row is the commit point: without it, the entry may still be on its way.
        if (job || now.getTime() - Date.parse(marker.createdAt) > orphanGraceMs) cleanup.push(due.deleteMarker(marker.outboxId));
      } else if (entry.status !== "pending") {
        due.dropMarker(marker.outboxId);
      } else if (entry.nextAttemptAt === null || entry.nextAttemptAt > cutoff) {
        cleanup.push(due.markDue([entry], marker.createdAt));
      } else {
        found.push({ job, step, entry });
      }
    });
    const admitted = admit ? await admit(found) : found.map(() => true);
    work.push(...found.filter((_, i) => admitted[i]));
  }
  // Cleaning is best effort: what fails now is met again by the next sweep.
  await Promise.allSettled(cleanup);
  return work.sort((a, b) => a.entry.nextAttemptAt!.localeCompare(b.entry.nextAttemptAt!)).slice(0, limit);
}

/**
 * Due work taken under a lease on its markers, for a sweep: the markers due by `cutoff` are
 * leased (leaseMarkers: a transaction per shard) before the rows they point at are read, so
 * taking an entry writes nothing of it; its first write is the publish's outcome. Of sweeps racing
 * for a marker one leases it; a marker still under another's lease is passed over. Cleans as
 * findDueWork does, and leaves alone an entry under an entry lease (an operator's retry of it).
 * `seen` counts the due markers met, taken or not, so that a drain knows whether more remain.
 */
export async function takeDueWork(
  due: DueIndex,
  layout: RowLayout,
  cutoff: Date,
  limit: number,
  orphanGraceMs: number,
  lease: DueLease,
  skip: ReadonlySet<string> = new Set(),
): Promise<{ seen: number; taken: OutboxWork[] }> {
  const dueBy = cutoff.toISOString();
  const now = lease.now.toISOString();
  const until = lease.until.toISOString();
  await due.flush();
  const read = await due.dueMarkers(dueBy, limit * CANDIDATES_PER_ENTRY + skip.size);
  const open = read.filter((marker) => !skip.has(marker.outboxId));
  const candidates = spread(
    open.filter((marker) => !isMarkerHeld(marker, now)),
    limit,
  );
  const taken: OutboxWork[] = [];
  const cleanup: Promise<unknown>[] = [];
  for (let next = 0; next < candidates.length && taken.length < limit; ) {
    // No more leased than can still be used: a lease left unused holds its entry back.
    const batch = candidates.slice(next, next + limit - taken.length);
    next += batch.length;
    const mine = await due.leaseMarkers(batch, until, lease.token);
    for (let i = 0; i < mine.length; i += READ_CONCURRENCY) {
      const part = mine.slice(i, i + READ_CONCURRENCY);
      const loaded = await Promise.all(part.map((marker) => readPointedRows(layout, marker)));
      part.forEach((marker, b) => {
        const { job, step, entry } = loaded[b]!;
        if (!job || !entry || !step) {
          if (job || lease.now.getTime() - Date.parse(marker.createdAt) > orphanGraceMs) cleanup.push(due.deleteMarker(marker.outboxId));
        } else if (entry.status !== "pending") {
          cleanup.push(due.deleteLeasedMarker(marker));
        } else if (entry.nextAttemptAt === null || entry.nextAttemptAt > dueBy) {
          cleanup.push(due.markDue([entry], marker.createdAt));
        } else if (!isLeased(entry) || entry.nextAttemptAt <= now) {
          taken.push({ job, step, entry });
        }
      });
    }
  }
  await Promise.allSettled(cleanup);
  return { seen: open.length, taken: taken.sort((a, b) => a.entry.nextAttemptAt!.localeCompare(b.entry.nextAttemptAt!)) };
}

/** `items` in runs of at most `size`. */
function chunks<T>(items: readonly T[], size: number): T[][] {
  const runs: T[][] = [];
  for (let i = 0; i < items.length; i += size) runs.push(items.slice(i, i + size));
  return runs;
}

/** Markers read per entry wanted: the choice `spread` draws from. */
const CANDIDATES_PER_ENTRY = 4;

/**
 * The earliest `4 × limit` markers in random order: replicas sweeping at the same moment then
 * mostly lease different entries instead of racing for the same first `limit`, while what is
 * most overdue still goes first.
 */
function spread(markers: DueMarker[], limit: number): DueMarker[] {
  const candidates = markers.slice(0, limit * CANDIDATES_PER_ENTRY);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
  }
  return candidates;
}
