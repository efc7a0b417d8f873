/** Reading a job's rows by their keys, the same way on both Azure layouts. */
import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import { isChildStepId } from "../../domain/ids.ts";
import type { Job, OutboxEntry, Step } from "../../domain/model.ts";
import { guarded, isMissing, queryAll } from "./client.ts";
import { entityToJob, entityToOutbox, entityToStep } from "./entities.ts";

/** Where a layout keeps a job's rows (all in the job's partition) and under which row keys. */
export interface RowLayout {
  clients: { job: TableClient; step: TableClient; outbox: TableClient };
  jobRow: string;
  stepRow(step: Pick<Step, "index" | "stepId">): string;
  outboxRow(entry: Pick<OutboxEntry, "outboxId">): string;
  /**
   * A change's rows are written one after the other (`table`), so a map's child can be found
   * ended and not yet counted by its map (see foldEndedChild); on `ledger` a change lands whole.
   */
  childrenWrittenApart?: boolean;
}

/** What points at one outbox entry and its step: a due or failed marker. */
export interface EntryPointer {
  jobId: string;
  outboxId: string;
  stepId: string;
  stepIndex: number;
}

/** The rows a pointer leads to, each null when absent. */
export interface PointedRows {
  job: Job | null;
  step: Step | null;
  entry: OutboxEntry | null;
}

/** Pointers resolved at once while a sweep, a listing or the stats read the rows they lead to. */
export const READ_CONCURRENCY = 16;

/**
 * The job, step and entry a pointer leads to: one query of the job's partition where a single
 * table holds all three (`ledger`) and they sit together at its start, else three point reads in
 * parallel (a map's child: its rows sort after every other row of the job, past its history).
 */
export function readPointedRows(layout: RowLayout, pointer: EntryPointer): Promise<PointedRows> {
  const { clients } = layout;
  if (clients.job === clients.step && clients.job === clients.outbox && !isChildStepId(pointer.stepId)) return readFromOnePartition(layout, pointer);
  return guarded("read due work", async () => {
    const [job, step, entry] = await Promise.all([
      readRow(clients.job, pointer.jobId, layout.jobRow, entityToJob),
      readRow(clients.step, pointer.jobId, layout.stepRow({ index: pointer.stepIndex, stepId: pointer.stepId }), entityToStep),
      readRow(clients.outbox, pointer.jobId, layout.outboxRow({ outboxId: pointer.outboxId }), entityToOutbox),
    ]);
    return { job, step, entry };
  });
}

async function readFromOnePartition(layout: RowLayout, pointer: EntryPointer): Promise<PointedRows> {
  const keys = {
    job: layout.jobRow,
    step: layout.stepRow({ index: pointer.stepIndex, stepId: pointer.stepId }),
    entry: layout.outboxRow({ outboxId: pointer.outboxId }),
  };
  // The key range bounds what the service scans; the equalities pick the three rows in it.
  const sorted = [keys.job, keys.step, keys.entry].sort();
  const rows = await guarded("read due work", () =>
    queryAll<Record<string, unknown>>(
      layout.clients.job,
      odata`PartitionKey eq ${pointer.jobId} and RowKey ge ${sorted[0]!} and RowKey le ${sorted[2]!} and (RowKey eq ${keys.job} or RowKey eq ${keys.step} or RowKey eq ${keys.entry})`,
    ),
  );
  const row = (rowKey: string) => rows.find((r) => r.rowKey === rowKey);
  const [job, step, entry] = [row(keys.job), row(keys.step), row(keys.entry)];
  return { job: job ? entityToJob(job) : null, step: step ? entityToStep(step) : null, entry: entry ? entityToOutbox(entry) : null };
}

/** A point read that answers null for a missing row. */
export async function readRow<T>(
  client: TableClient,
  partitionKey: string,
  rowKey: string,
  decode: (row: TableEntityResult<Record<string, unknown>>) => T,
): Promise<T | null> {
  try {
    return decode(await client.getEntity<Record<string, unknown>>(partitionKey, rowKey));
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
}
