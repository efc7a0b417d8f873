/**
 * A job's history on Azure (docs/STORAGE.md): one row per entry in the job's partition, keyed by
 * its slot among the newest MAX_HISTORY_ENTRIES (`~H_<slot>`), so that a newer entry overwrites
 * the oldest and a job never holds more. The `~` keeps them out of reads of the job's state.
 */
import { odata, type TableClient } from "@azure/data-tables";
import { historySlot, MAX_HISTORY_ENTRIES } from "../../domain/history.ts";
import type { HistoryEntry } from "../../domain/model.ts";
import { queryAll } from "./client.ts";
import { entityToHistory, historyToEntity } from "./entities.ts";
import type { Entity } from "./limits.ts";

export const historyRow = (seq: number) => `~H_${String(historySlot(seq)).padStart(4, "0")}`;

export function historyEntity(entry: HistoryEntry): Entity {
  return historyToEntity(entry, { partitionKey: entry.jobId, rowKey: historyRow(entry.seq) });
}

/** Entries after `after`, oldest first: one range query over at most MAX_HISTORY_ENTRIES rows. */
export async function readHistory(table: TableClient, jobId: string, after: number, limit: number): Promise<HistoryEntry[]> {
  const rows = await queryAll<Record<string, unknown>>(
    table,
    odata`PartitionKey eq ${jobId} and RowKey ge ${"~H_"} and RowKey lt ${"~H`"} and seq gt ${after}`,
    {
      limit: MAX_HISTORY_ENTRIES,
    },
  );
  return rows
    .map((row) => entityToHistory(row, jobId))
    .sort((a, b) => a.seq - b.seq)
    .slice(0, limit);
}
