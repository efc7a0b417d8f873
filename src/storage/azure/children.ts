/**
 * A map step's children on Azure (docs/STORAGE.md): their step rows and directive rows live in
 * the job's partition under row keys that sort after every other row of the job (`~`), so that
 * reading a job stops before them (its cost bounded by the protocol, not by a list's length) and
 * a child is read by point reads and one short range.
 */
import { odata, type TableClient } from "@azure/data-tables";
import { isChildStepId, stepIdFor } from "../../domain/ids.ts";
import type { OutboxEntry, Step } from "../../domain/model.ts";
import { queryAll } from "./client.ts";
import { entityToOutbox, entityToStep } from "./entities.ts";
import { readRow } from "./rows.ts";

/** Every row key of a child sorts at or after this; every other row of a job before it. */
const CHILD_ROWS_FROM = "~";

export const childStepRow = (stepId: string) => `~C_${stepId}`;
export const childOutboxRow = (outboxId: string) => `~O_${outboxId}`;

/** Whether a directive belongs to a map step's child. */
export function isChildOutboxId(outboxId: string): boolean {
  return isChildStepId(outboxId.replace(/\.d\d+$/, ""));
}

/** A job's rows before its children: the filter that getJob adds to its partition queries. */
export const BEFORE_CHILDREN = odata`RowKey lt ${CHILD_ROWS_FROM}`;

export interface ChildTables {
  step: TableClient;
  outbox: TableClient;
}

/** The named children, each with its directives: a point read and a short range each. */
export async function readChildren(tables: ChildTables, jobId: string, stepIds: readonly string[]): Promise<{ steps: Step[]; outbox: OutboxEntry[] }> {
  const read = await Promise.all(
    stepIds.map(async (stepId) => {
      const [step, directives] = await Promise.all([
        readRow(tables.step, jobId, childStepRow(stepId), entityToStep),
        queryAll<Record<string, unknown>>(
          tables.outbox,
          odata`PartitionKey eq ${jobId} and RowKey ge ${childOutboxRow(`${stepId}.d`)} and RowKey lt ${childOutboxRow(`${stepId}.e`)}`,
        ),
      ]);
      return { step, outbox: directives.map(entityToOutbox) };
    }),
  );
  return { steps: read.flatMap((r) => (r.step ? [r.step] : [])), outbox: read.flatMap((r) => r.outbox) };
}

/** A map step's children in item order from item `from`: one range query. */
export async function listChildRows(step: TableClient, jobId: string, stepIndex: number, from: number, limit: number, open: boolean): Promise<Step[]> {
  const prefix = stepIdFor(jobId, stepIndex);
  const range = odata`PartitionKey eq ${jobId} and RowKey ge ${childStepRow(`${prefix}.i${String(from).padStart(5, "0")}`)} and RowKey lt ${childStepRow(`${prefix}.j`)}`;
  const filter = open ? `${range} and (status eq 'pending' or status eq 'initiated')` : range;
  return (await queryAll<Record<string, unknown>>(step, filter, { limit })).map(entityToStep);
}

/** The row keys of every child row of a job (steps and directives), for its removal. */
export async function childRowKeys(table: TableClient, jobId: string): Promise<string[]> {
  const rows = await queryAll<Record<string, unknown>>(table, odata`PartitionKey eq ${jobId} and RowKey ge ${CHILD_ROWS_FROM}`, { select: ["RowKey"] });
  return rows.flatMap((row) => (row.rowKey === undefined ? [] : [row.rowKey]));
}
