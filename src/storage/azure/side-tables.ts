/** The tables both Azure layouts keep beside a job's rows: idempotency claims, job index, due index. */
import type { TableClient } from "@azure/data-tables";
import { type AzureTableOptions, createTableClient } from "./client.ts";
import { createDueIndex, type DueIndex } from "./due-index.ts";
import { createIdempotencyClaims, type IdempotencyClaims } from "./idempotency-claims.ts";
import { createJobIndex, type JobIndex } from "./job-index.ts";

export interface SideTableNames {
  idempotency: string;
  jobIndex: string;
  /** The due-entry index (see dueIndexTable in config/settings.ts). */
  due: string;
}

export interface SideTables {
  claims: IdempotencyClaims;
  jobIndex: JobIndex;
  due: DueIndex;
  /** Their clients, for creating the tables at start. */
  clients: TableClient[];
}

export function createSideTables(names: SideTableNames, options: AzureTableOptions): SideTables {
  const clients = [names.idempotency, names.jobIndex, names.due].map((name) => createTableClient(name, options));
  const [idempotency, jobIndex, due] = clients as [TableClient, TableClient, TableClient];
  return { claims: createIdempotencyClaims(idempotency), jobIndex: createJobIndex(jobIndex), due: createDueIndex(due), clients };
}

/** A due marker whose job does not exist is removed once this old (the job may still be on its way). */
export function orphanGraceMs(options: { orphanGraceSeconds?: number }): number {
  return (options.orphanGraceSeconds ?? 60) * 1000;
}
