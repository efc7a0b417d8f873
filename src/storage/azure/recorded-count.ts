/**
 * A count that a table's keys depend on (the job index's buckets, the deadline index's shards),
 * recorded in the table itself at first use (row `~layout`/<name>) and read back at every start:
 * rows written under one count are not found under another, so a configured count that differs
 * from the recorded one stops the start, naming both. A table that already holds rows of the kind
 * but no record was written before counts were recorded, under the layout's old fixed count.
 */
import type { TableClient } from "@azure/data-tables";
import { StorageRejectedError } from "../errors.ts";
import { guarded, insertIfAbsent } from "./client.ts";
import { readRow } from "./rows.ts";

export const LAYOUT_PARTITION = "~layout";

export interface RecordedCountOptions {
  /** The row key of the record, e.g. `job-index`. */
  name: string;
  /** The setting's value; null: the recorded count, or `forNewTable`. */
  configured: number | null;
  forNewTable: number;
  /** The count of tables from before records, and how to tell that the table holds such rows. */
  before: { count: number; hasRows: () => Promise<boolean> };
  /** Named in the refusal: the variable, and the table variable to change instead. */
  variable: string;
  tableVariable: string;
}

export async function recordedCount(client: TableClient, options: RecordedCountOptions): Promise<number> {
  const read = () => readRow(client, LAYOUT_PARTITION, options.name, (entity) => Number(entity.count));
  const recorded = await guarded(`read the ${options.name} layout`, async () => {
    const found = await read();
    if (found !== null) return found;
    if (await options.before.hasRows()) return options.before.count;
    // A new table: record the count, or take the one a replica starting beside us recorded first.
    await insertIfAbsent(client, { partitionKey: LAYOUT_PARTITION, rowKey: options.name, count: options.configured ?? options.forNewTable });
    return (await read()) ?? options.configured ?? options.forNewTable;
  });
  if (options.configured !== null && options.configured !== recorded) {
    throw new StorageRejectedError(
      `${options.variable}=${options.configured}, but its table was written with ${recorded}: rows would be missed. Keep ${recorded}, or point ${options.tableVariable} at a new table`,
    );
  }
  return recorded;
}
