/**
 * The tables both Azure layouts keep beside their job rows: idempotency records, the per-tenant
 * job index, and the due-entry index the sweeper reads.
 *
 * Due index: one marker per pending outbox entry, in a table of its own (see dueIndexTable),
 * spread over partitions `due-0`…`due-3`. Its row key is the outbox id, so writing or deleting a
 * marker needs nothing but the entry; `dueAt` is a property, and a sweep reads only the markers
 * due by now, then the rows they point at by point reads: O(pending), never O(all jobs ever). A
 * marker is written before its entry (a crash leaves an orphan marker, cleaned by the sweep,
 * never an entry nobody finds) and deleted after its entry stops being pending.
 */
import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import { MalformedRequestError } from "../../domain/errors.ts";
import type { IdempotencyRecord, Job, JobSummary, OutboxEntry, OutboxStatus, OutboxWork, Page, Step } from "../../domain/model.ts";
import { decodeCursor, encodeCursor, type OutboxStats, type PageRequest } from "../store.ts";
import { deleteIfPresent, guarded, insertIfAbsent, queryAll, statusOf } from "./client.ts";
import { entityToIdempotency, entityToJob, entityToOutbox, entityToStep, entityToSummary, idempotencyKeys, idempotencyToEntity, keysOf, summaryToEntity } from "./entities.ts";
import { checkEntity } from "./limits.ts";

const DUE_SHARDS = 4;

export interface DueMarker {
  partitionKey: string;
  jobId: string;
  outboxId: string;
  stepId: string;
  stepIndex: number;
  dueAt: string;
  /** When the marker was last written: an orphan is removed only once it is old enough. */
  createdAt: string;
  /** When its entry was created: the age of the oldest pending entry. */
  entryCreatedAt: string;
}

const FAILED_PARTITION = "failed";

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
  };
}

export type ClaimOutcome = { claimed: true } | { claimed: false; existing: IdempotencyRecord };

function dueShard(outboxId: string): string {
  let hash = 0;
  for (let i = 0; i < outboxId.length; i++) hash = (hash * 31 + outboxId.charCodeAt(i)) >>> 0;
  return `due-${hash % DUE_SHARDS}`;
}

export function createIndexes(clients: { idempotency: TableClient; jobIndex: TableClient; due: TableClient }) {
  const { idempotency, jobIndex, due } = clients;

  return {
    async claim(record: IdempotencyRecord): Promise<ClaimOutcome> {
      return guarded("claim idempotency key", async () => {
        const entity = idempotencyToEntity(record);
        checkEntity(entity);
        if ((await insertIfAbsent(idempotency, entity)).inserted) return { claimed: true };
        const keys = idempotencyKeys(record.tenantId, record.key);
        return { claimed: false, existing: entityToIdempotency(await idempotency.getEntity(keys.partitionKey, keys.rowKey)) };
      });
    },

    async writeIndexRow(job: Job): Promise<void> {
      await guarded("write job index", () => jobIndex.upsertEntity(summaryToEntity(job), "Replace"));
    },

    async listJobs(tenantId: string, page: PageRequest): Promise<Page<JobSummary>> {
      let after = "";
      if (page.cursor !== null) {
        const decoded = decodeCursor(page.cursor);
        if (decoded === null) throw new MalformedRequestError("cursor is not one this service issued", { errors: [{ path: "/query/cursor", message: "invalid cursor" }] });
        after = decoded;
      }
      const rows = await guarded("list jobs", () => queryAll(jobIndex, odata`PartitionKey eq ${tenantId} and RowKey gt ${after}`, { limit: page.limit + 1 }));
      const items = rows.slice(0, page.limit);
      return { items: items.map(entityToSummary), nextCursor: rows.length > page.limit ? encodeCursor(keysOf(items.at(-1)!).rowKey) : null };
    },

    /**
     * Upserts the markers of pending entries (due index) and of failed ones (the operator's
     * list); call before writing the entries.
     */
    async markDue(entries: readonly OutboxEntry[], now: string): Promise<void> {
      const marked = entries.filter((e) => (e.status === "pending" && e.nextAttemptAt !== null) || e.status === "failed");
      await this.writeMarkers(marked, now);
    },

    /** Before writing entries: the markers of pending and failed ones, except leases (see unmarkDue). */
    async markBeforeWrite(entries: readonly OutboxEntry[], now: string): Promise<void> {
      await this.markDue(entries.filter((e) => !isLeased(e)), now);
    },

    async writeMarkers(marked: readonly OutboxEntry[], now: string): Promise<void> {
      await guarded("write outbox markers", () =>
        Promise.all(
          marked.map((entry) =>
            due.upsertEntity(
              {
                partitionKey: entry.status === "failed" ? FAILED_PARTITION : dueShard(entry.outboxId),
                rowKey: entry.outboxId,
                jobId: entry.jobId,
                stepId: entry.stepId,
                stepIndex: entry.stepIndex,
                dueAt: entry.nextAttemptAt ?? undefined,
                entryCreatedAt: entry.createdAt,
                createdAt: now,
              },
              "Merge",
            ),
          ),
        ),
      );
    },

    /**
     * After writing the entries: deletes the markers of entries no longer pending, and moves a
     * leased entry's marker to the lease's end. (A lease only postpones an entry that already
     * has a marker, so its marker may follow the write; written before, a replica that lost the
     * lease race would leave a marker behind for an entry the winner has sent meanwhile.)
     */
    async unmarkDue(entries: readonly OutboxEntry[], now: string): Promise<void> {
      const settled = entries.filter((e) => e.status !== "pending");
      await guarded("update due markers", () =>
        Promise.all([
          ...settled.map((entry) => deleteIfPresent(due, dueShard(entry.outboxId), entry.outboxId)),
          this.markDue(entries.filter(isLeased), now),
        ]),
      );
    },

    async deleteMarker(outboxId: string): Promise<void> {
      await guarded("delete due marker", () => deleteIfPresent(due, dueShard(outboxId), outboxId));
    },

    async deleteFailedMarker(outboxId: string): Promise<void> {
      await guarded("delete failed marker", () => deleteIfPresent(due, FAILED_PARTITION, outboxId));
    },

    /** Markers due by `now` across all shards, earliest first. */
    async dueMarkers(now: string): Promise<DueMarker[]> {
      const shards = Array.from({ length: DUE_SHARDS }, (_, i) => `due-${i}`);
      const rows = await guarded("read due markers", () =>
        Promise.all(shards.map((shard) => queryAll<Record<string, unknown>>(due, odata`PartitionKey eq ${shard} and dueAt le ${now}`))),
      );
      return rows
        .flat()
        .map(toMarker)
        .sort((a, b) => a.dueAt.localeCompare(b.dueAt));
    },

    /** Markers of one kind after a cursor, in key order: pending (all due shards) or failed. */
    async markersAfter(kind: "pending" | "failed", after: { partitionKey: string; rowKey: string } | null, limit: number): Promise<DueMarker[]> {
      const range = kind === "failed" ? odata`PartitionKey eq ${FAILED_PARTITION}` : odata`PartitionKey ge ${"due-"} and PartitionKey lt ${"due."}`;
      const resume = after ? odata` and (PartitionKey gt ${after.partitionKey} or (PartitionKey eq ${after.partitionKey} and RowKey gt ${after.rowKey}))` : "";
      return (await guarded("read outbox markers", () => queryAll<Record<string, unknown>>(due, range + resume, { limit }))).map(toMarker);
    },

    /** Every pending marker (count and oldest entry): O(pending). */
    async pendingMarkers(): Promise<DueMarker[]> {
      return (await guarded("read due markers", () => queryAll<Record<string, unknown>>(due, odata`PartitionKey ge ${"due-"} and PartitionKey lt ${"due."}`))).map(toMarker);
    },
  };
}

export type Indexes = ReturnType<typeof createIndexes>;

/** Markers resolved at once while a sweep reads the rows they point at. */
const LOAD_CONCURRENCY = 16;

/** The rows a marker points at, each null when absent. */
export interface MarkedRows {
  job: Job | null;
  step: Step | null;
  entry: OutboxEntry | null;
}

/** Where a layout keeps a job's rows (all in the job's partition) and under which row keys. */
export interface RowLayout {
  clients: { job: TableClient; step: TableClient; outbox: TableClient };
  jobRow: string;
  stepRow(step: Pick<Step, "index" | "stepId">): string;
  outboxRow(entry: Pick<OutboxEntry, "outboxId">): string;
}

/** The job, step and entry a marker points at, by three point reads in parallel. */
export function readMarkedRows(layout: RowLayout, marker: DueMarker): Promise<MarkedRows> {
  const { clients } = layout;
  return guarded("read due work", async () => {
    const [job, step, entry] = await Promise.all([
      readRow(clients.job, marker.jobId, layout.jobRow, entityToJob),
      readRow(clients.step, marker.jobId, layout.stepRow({ index: marker.stepIndex, stepId: marker.stepId }), entityToStep),
      readRow(clients.outbox, marker.jobId, layout.outboxRow({ outboxId: marker.outboxId }), entityToOutbox),
    ]);
    return { job, step, entry };
  });
}

/**
 * The due work behind the markers due by `now`, cleaning as it goes: an orphan marker (its job
 * was never stored) once older than `orphanGraceMs`, a marker of an entry no longer pending, and
 * a marker whose entry was rescheduled (rewritten with the entry's own due time).
 */
export async function findDueWork(indexes: Indexes, layout: RowLayout, now: Date, limit: number, orphanGraceMs: number): Promise<OutboxWork[]> {
  const cutoff = now.toISOString();
  const markers = spread(await indexes.dueMarkers(cutoff), limit);
  const work: OutboxWork[] = [];
  const cleanup: Promise<unknown>[] = [];
  for (let i = 0; i < markers.length && work.length < limit; i += LOAD_CONCURRENCY) {
    const batch = markers.slice(i, i + LOAD_CONCURRENCY);
    const loaded = await Promise.all(batch.map((marker) => readMarkedRows(layout, marker)));
    batch.forEach((marker, b) => {
      const { job, step, entry } = loaded[b]!;
      if (!job || !entry || !step) {
        // The job row is the commit point: without it, the entry may still be on its way.
        if (job || now.getTime() - Date.parse(marker.createdAt) > orphanGraceMs) cleanup.push(indexes.deleteMarker(marker.outboxId));
      } else if (entry.status !== "pending") {
        cleanup.push(indexes.deleteMarker(marker.outboxId));
      } else if (entry.nextAttemptAt === null || entry.nextAttemptAt > cutoff) {
        cleanup.push(indexes.markDue([entry], marker.createdAt));
      } else {
        work.push({ job, step, entry });
      }
    });
  }
  // Cleaning is best effort: what fails now is met again by the next sweep.
  await Promise.allSettled(cleanup);
  return work.sort((a, b) => a.entry.nextAttemptAt!.localeCompare(b.entry.nextAttemptAt!)).slice(0, limit);
}

/**
 * The earliest `4 × limit` markers in random order: replicas sweeping at the same moment then
 * mostly lease different entries instead of racing for the same first `limit`, while what is
 * most overdue still goes first.
 */
function spread(markers: DueMarker[], limit: number): DueMarker[] {
  const candidates = markers.slice(0, limit * 4);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
  }
  return candidates;
}

/** A point read that answers null for a missing row. */
export async function readRow<T>(client: TableClient, partitionKey: string, rowKey: string, decode: (row: TableEntityResult<Record<string, unknown>>) => T): Promise<T | null> {
  try {
    return decode(await client.getEntity<Record<string, unknown>>(partitionKey, rowKey));
  } catch (error) {
    if (statusOf(error) === 404) return null;
    throw error;
  }
}

/**
 * The operator's outbox listing on an Azure layout. Pending and failed come from the markers
 * (then point reads; stale markers skipped); sent reads the outbox rows with Azure's own
 * continuation token as the cursor, since sent entries keep no index.
 */
export async function listOutboxWith(indexes: Indexes, layout: RowLayout & { sentFilter: string }, status: OutboxStatus, page: PageRequest): Promise<Page<OutboxEntry>> {
  let cursor: string | null = null;
  if (page.cursor !== null) {
    cursor = decodeCursor(page.cursor);
    if (cursor === null) throw new MalformedRequestError("cursor is not one this service issued", { errors: [{ path: "/query/cursor", message: "invalid cursor" }] });
  }
  if (status === "sent") {
    const pages = layout.clients.outbox
      .listEntities<Record<string, unknown>>({ queryOptions: { filter: layout.sentFilter } })
      .byPage({ maxPageSize: page.limit, ...(cursor ? { continuationToken: cursor } : {}) });
    const first = await guarded("list sent entries", async () => (await pages.next()).value as (TableEntityResult<Record<string, unknown>>[] & { continuationToken?: string }) | undefined);
    const items = (first ?? []).map(entityToOutbox);
    return { items, nextCursor: first?.continuationToken ? encodeCursor(first.continuationToken) : null };
  }
  const after = cursor ? (JSON.parse(cursor) as { partitionKey: string; rowKey: string }) : null;
  const markers = await indexes.markersAfter(status, after, page.limit);
  const rows = await Promise.all(markers.map((marker) => readMarkedRows(layout, marker)));
  const items = rows.map((r) => r.entry).filter((entry): entry is OutboxEntry => entry !== null && entry.status === status);
  // A failed entry an operator reset keeps its marker until met here.
  if (status === "failed") {
    await Promise.allSettled(markers.filter((_, i) => rows[i]!.entry?.status !== "failed").map((marker) => indexes.deleteFailedMarker(marker.outboxId)));
  }
  const last = markers.at(-1);
  return { items, nextCursor: markers.length === page.limit && last ? encodeCursor(JSON.stringify({ partitionKey: last.partitionKey, rowKey: last.outboxId })) : null };
}

/**
 * Counts from the markers, each checked against its entry (point reads, O(pending + failed)):
 * a marker can outlive its entry's state for a while, and stats feed alerts.
 */
export async function outboxStatsWith(indexes: Indexes, layout: RowLayout, now: Date): Promise<OutboxStats> {
  const entriesOf = async (markers: DueMarker[]) => {
    const entries: (OutboxEntry | null)[] = [];
    for (let i = 0; i < markers.length; i += LOAD_CONCURRENCY) {
      entries.push(...(await Promise.all(markers.slice(i, i + LOAD_CONCURRENCY).map(async (marker) => (await readMarkedRows(layout, marker)).entry))));
    }
    return entries;
  };
  const pending = (await entriesOf(await indexes.pendingMarkers())).filter((entry): entry is OutboxEntry => entry?.status === "pending");
  let failed = 0;
  for (let after: DueMarker | undefined, batch: DueMarker[]; ; after = batch.at(-1)) {
    batch = await indexes.markersAfter("failed", after ? { partitionKey: after.partitionKey, rowKey: after.outboxId } : null, 1000);
    failed += (await entriesOf(batch)).filter((entry) => entry?.status === "failed").length;
    if (batch.length < 1000) break;
  }
  const oldest = pending.reduce<string | null>((min, entry) => (min === null || entry.createdAt < min ? entry.createdAt : min), null);
  return { pending: pending.length, failed, oldestPendingAgeSeconds: oldest === null ? null : Math.max(0, (now.getTime() - Date.parse(oldest)) / 1000) };
}
