/** Reading a job's rows by their keys, the same way on both Azure layouts. */
import type { TableClient, TableEntityResult } from "@azure/data-tables";
import type { Job, OutboxEntry, Step } from "../../domain/model.ts";
import { guarded, isMissing } from "./client.ts";
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

/** The job, step and entry a pointer leads to, by three point reads in parallel. */
export function readPointedRows(layout: RowLayout, pointer: EntryPointer): Promise<PointedRows> {
  const { clients } = layout;
  return guarded("read due work", async () => {
    const [job, step, entry] = await Promise.all([
      readRow(clients.job, pointer.jobId, layout.jobRow, entityToJob),
      readRow(clients.step, pointer.jobId, layout.stepRow({ index: pointer.stepIndex, stepId: pointer.stepId }), entityToStep),
      readRow(clients.outbox, pointer.jobId, layout.outboxRow({ outboxId: pointer.outboxId }), entityToOutbox),
    ]);
    return { job, step, entry };
  });
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
