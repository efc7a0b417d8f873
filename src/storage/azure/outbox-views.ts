/**
 * The operator's view of the outbox on both Azure layouts: the listing by status and the stats.
 * Pending and failed come from the due index's markers (then point reads; stale markers are
 * skipped); sent and withdrawn read the outbox rows with Azure's own continuation token as the
 * cursor, since settled entries keep no index.
 */
import type { TableEntityResult } from "@azure/data-tables";
import { InvalidCursorError } from "../../domain/errors.ts";
import type { OutboxEntry, OutboxStatus, Page } from "../../domain/model.ts";
import { encodeCursor, readCursor } from "../cursor.ts";
import type { OutboxStats, PageRequest } from "../job-store.ts";
import { guarded } from "./client.ts";
import type { DueIndex, DueMarker, MarkerPosition } from "./due-index.ts";
import { entityToOutbox } from "./entities.ts";
import { READ_CONCURRENCY, type RowLayout, readPointedRows } from "./rows.ts";

export async function listOutbox(
  due: DueIndex,
  /** `rowsOfStatus`: the filter selecting the outbox rows of a status, for those without markers. */
  layout: RowLayout & { rowsOfStatus: (status: OutboxStatus) => string },
  status: OutboxStatus,
  page: PageRequest,
): Promise<Page<OutboxEntry>> {
  const cursor = page.cursor === null ? null : readCursor(page.cursor);
  if (status === "sent" || status === "withdrawn") {
    const pages = layout.clients.outbox
      .listEntities<Record<string, unknown>>({ queryOptions: { filter: layout.rowsOfStatus(status) } })
      .byPage({ maxPageSize: page.limit, ...(cursor ? { continuationToken: cursor } : {}) });
    const first = await guarded(
      "list sent entries",
      async () => (await pages.next()).value as (TableEntityResult<Record<string, unknown>>[] & { continuationToken?: string }) | undefined,
    );
    const items = (first ?? []).map(entityToOutbox);
    return { items, nextCursor: first?.continuationToken ? encodeCursor(first.continuationToken) : null };
  }
  const markers = await due.markersAfter(status, cursor ? markerPositionOf(cursor) : null, page.limit);
  const rows = await Promise.all(markers.map((marker) => readPointedRows(layout, marker)));
  const items = rows.map((r) => r.entry).filter((entry): entry is OutboxEntry => entry !== null && entry.status === status);
  // A failed entry an operator reset keeps its marker until met here.
  if (status === "failed") {
    await Promise.allSettled(markers.filter((_, i) => rows[i]!.entry?.status !== "failed").map((marker) => due.deleteFailedMarker(marker.outboxId)));
  }
  const last = markers.at(-1);
  return {
    items,
    nextCursor: markers.length === page.limit && last ? encodeCursor(JSON.stringify({ partitionKey: last.partitionKey, rowKey: last.outboxId })) : null,
  };
}

/** A cursor we issued decodes to a position; anything else is not ours. */
function markerPositionOf(decoded: string): MarkerPosition {
  try {
    const value = JSON.parse(decoded) as Partial<MarkerPosition>;
    if (typeof value.partitionKey === "string" && typeof value.rowKey === "string") return { partitionKey: value.partitionKey, rowKey: value.rowKey };
  } catch {
    // not JSON: refused below like any other foreign cursor
  }
  throw new InvalidCursorError("the cursor is not one this service issued");
}

/**
 * Counts from the markers, each checked against its entry (point reads, O(pending + failed)):
 * a marker can outlive its entry's state for a while, and stats feed alerts.
 */
export async function outboxStats(due: DueIndex, layout: RowLayout, now: Date): Promise<OutboxStats> {
  const entriesOf = async (markers: DueMarker[]) => {
    const entries: (OutboxEntry | null)[] = [];
    for (let i = 0; i < markers.length; i += READ_CONCURRENCY) {
      entries.push(...(await Promise.all(markers.slice(i, i + READ_CONCURRENCY).map(async (marker) => (await readPointedRows(layout, marker)).entry))));
    }
    return entries;
  };
  const pending = (await entriesOf(await due.pendingMarkers())).filter((entry): entry is OutboxEntry => entry?.status === "pending");
  let failed = 0;
  for (let after: DueMarker | undefined, batch: DueMarker[]; ; after = batch.at(-1)) {
    batch = await due.markersAfter("failed", after ? { partitionKey: after.partitionKey, rowKey: after.outboxId } : null, 1000);
    failed += (await entriesOf(batch)).filter((entry) => entry?.status === "failed").length;
    if (batch.length < 1000) break;
  }
  const oldest = pending.reduce<string | null>((min, entry) => (min === null || entry.createdAt < min ? entry.createdAt : min), null);
  return { pending: pending.length, failed, oldestPendingAgeSeconds: oldest === null ? null : Math.max(0, (now.getTime() - Date.parse(oldest)) / 1000) };
}
