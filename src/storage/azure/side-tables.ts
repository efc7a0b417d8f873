/** The tables both Azure layouts keep beside a job's rows: idempotency claims, job index, due and deadline indexes. */
import type { TableClient } from "@azure/data-tables";
import type { IdempotencyRecord, JobAggregate } from "../../domain/model.ts";
import { type AzureTableOptions, createTableClient } from "./client.ts";
import { createDeadlineIndex, type DeadlineIndex } from "./deadline-index.ts";
import { createDueIndex, type DueIndex } from "./due-index.ts";
import { type ClaimOutcome, createIdempotencyClaims, type IdempotencyClaims } from "./idempotency-claims.ts";
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
  /** Step deadlines: markers in the due-index table, partitions of their own. */
  deadlines: DeadlineIndex;
  /** Their clients, for creating the tables at start. */
  clients: TableClient[];
}

export function createSideTables(names: SideTableNames, options: AzureTableOptions): SideTables {
  const clients = [names.idempotency, names.jobIndex, names.due].map((name) => createTableClient(name, options));
  const [idempotency, jobIndex, due] = clients as [TableClient, TableClient, TableClient];
  return {
    claims: createIdempotencyClaims(idempotency),
    jobIndex: createJobIndex(jobIndex),
    due: createDueIndex(due),
    deadlines: createDeadlineIndex(due),
    clients,
  };
}

/** Sends the index changes still queued: before closing. */
export async function flushSideTables(side: SideTables): Promise<void> {
  await Promise.all([side.due.flush(), side.deadlines.flush()]);
}

/** A due marker whose job does not exist is removed once this old (the job may still be on its way). */
export function orphanGraceMs(options: { orphanGraceSeconds?: number }): number {
  return (options.orphanGraceSeconds ?? 60) * 1000;
}

/**
 * The first step of every Azure intake: claim the idempotency key (when there is one) while the
 * due and deadline markers go in, before their rows. When the key is taken, the markers point at
 * a job that will never be stored: they are removed off the answer's path.
 */
export async function claimAndMark(side: SideTables, aggregate: JobAggregate, claim: IdempotencyRecord | null): Promise<ClaimOutcome> {
  const [claimed] = await Promise.all([
    claim ? side.claims.claim(claim) : Promise.resolve<ClaimOutcome>({ claimed: true }),
    side.due.markDue(aggregate.outbox, aggregate.job.createdAt),
    side.deadlines.beforeWrite(aggregate.steps, aggregate.job.createdAt),
  ]);
  if (!claimed.claimed) {
    void Promise.allSettled(aggregate.outbox.map((entry) => side.due.deleteMarker(entry.outboxId)));
    void side.deadlines.forget(aggregate.steps);
  }
  return claimed;
}
