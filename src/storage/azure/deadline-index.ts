/**
 * The step deadline index of both Azure layouts: one marker per dispatched step with a deadline,
 * in the due-index table, partitions `deadline-0`…`deadline-<n-1>` (n: LUCIUS_DEADLINE_SHARDS, 8
 * on a new table, recorded in it; 4 for tables from before the count was recorded). Its row key starts with the
 * deadline (`<deadlineAt>_<stepId>`), so a sweep reads one key range per partition, exactly the
 * markers that expired: its cost grows with what expired, never with the open steps (a filter on
 * a property, as the due index uses, would scan every marker of the partition).
 *
 * A marker is written before its step row (a crash leaves an orphan marker, which the sweep
 * removes, never a deadline nobody finds). The marker of a step that ended is deleted after the
 * write, in batches; one of a superseded deadline (a retry, a moved deadline) is removed when the
 * sweep meets it.
 */
import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import { isChildStepId, stepIdFor } from "../../domain/ids.ts";
import { endedUncounted } from "../../domain/map-step.ts";
import type { Step } from "../../domain/model.ts";
import { hasJobEnded, hasStepEnded } from "../../domain/transitions.ts";
import type { ExpiredStep } from "../job-store.ts";
import { createBatchedMarkerWrites } from "./batched-marker-writes.ts";
import { deleteIfPresent, guarded, queryAll } from "./client.ts";
import { shardOf } from "./due-index.ts";
import { entityToJob, entityToStep, keysOf } from "./entities.ts";
import { recordedCount } from "./recorded-count.ts";
import { READ_CONCURRENCY, type RowLayout, readRow } from "./rows.ts";

/** Every step's marker is written and removed once: 8 shards keep each under ~0.75 calls per two-step job. */
export const DEFAULT_DEADLINE_SHARDS = 8;
/** Open steps whose marker this process remembers writing (see beforeWrite). */
const MARKED_REMEMBERED = 10_000;
/** The fixed count before it was recorded. */
const SHARDS_BEFORE_RECORDS = 4;

interface DeadlineMarker extends ExpiredStep {
  partitionKey: string;
  rowKey: string;
  stepIndex: number;
  createdAt: string;
}

function toMarker(row: TableEntityResult<Record<string, unknown>>): DeadlineMarker {
  const { partitionKey, rowKey } = keysOf(row);
  return {
    partitionKey,
    rowKey,
    jobId: String(row.jobId),
    stepId: String(row.stepId),
    stepIndex: Number(row.stepIndex),
    deadlineAt: String(row.deadlineAt),
    createdAt: String(row.createdAt),
  };
}

const isWatched = (step: Step): step is Step & { deadlineAt: string } => step.deadlineAt !== null && !hasStepEnded(step);

export interface DeadlineIndexOptions {
  /** LUCIUS_DEADLINE_SHARDS; null: the recorded count, or DEFAULT_DEADLINE_SHARDS on a new table. */
  shards?: number | null;
}

export function createDeadlineIndex(client: TableClient, options: DeadlineIndexOptions = {}) {
  const writes = createBatchedMarkerWrites(client);
  let shards = options.shards ?? DEFAULT_DEADLINE_SHARDS;
  const shardFor = (stepId: string) => `deadline-${shardOf(stepId, shards)}`;
  const keysFor = (step: Pick<Step, "stepId">, deadlineAt: string) => ({ partitionKey: shardFor(step.stepId), rowKey: `${deadlineAt}_${step.stepId}` });

  /** The markers that point at open steps; the others are queued for deletion. */
  async function openSteps(layout: RowLayout, markers: DeadlineMarker[], now: Date, orphanGraceMs: number): Promise<ExpiredStep[]> {
    const found: ExpiredStep[] = [];
    for (let i = 0; i < markers.length; i += READ_CONCURRENCY) {
      const batch = markers.slice(i, i + READ_CONCURRENCY);
      const rows = await guarded("read expired steps", () =>
        Promise.all(
          batch.map(async (marker) => {
            const [job, step] = await Promise.all([
              readRow(layout.clients.job, marker.jobId, layout.jobRow, entityToJob),
              readRow(layout.clients.step, marker.jobId, layout.stepRow({ index: marker.stepIndex, stepId: marker.stepId }), entityToStep),
            ]);
            return { job, step };
          }),
        ),
      );
      // On `table` the marker of a child that ended but was not counted by its map stays: it is
      // how the child gets counted when no repeat of its event comes (see foldEndedChild).
      const uncounted = await Promise.all(
        rows.map(async ({ job, step }) => {
          if (!layout.childrenWrittenApart || !job || !step || hasJobEnded(job) || !isChildStepId(step.stepId) || !hasStepEnded(step)) return false;
          const map = await guarded("read map step", () =>
            readRow(layout.clients.step, step.jobId, layout.stepRow({ index: step.index, stepId: stepIdFor(step.jobId, step.index) }), entityToStep),
          );
          return map !== null && endedUncounted(map, step);
        }),
      );
      batch.forEach((marker, b) => {
        const { job, step } = rows[b]!;
        if (uncounted[b]) {
          found.push({ jobId: marker.jobId, stepId: marker.stepId, deadlineAt: marker.deadlineAt });
          return;
        }
        const stale =
          !job || !step
            ? // The job row is the commit point: without it, the job may still be on its way.
              job !== null || now.getTime() - Date.parse(marker.createdAt) > orphanGraceMs
            : // A failed job's open step is its compensation step (the rest was cancelled): it still runs.
              (hasJobEnded(job) && job.status !== "failed") || hasStepEnded(step) || step.deadlineAt !== marker.deadlineAt;
        if (stale) writes.defer(["delete", { partitionKey: marker.partitionKey, rowKey: marker.rowKey }]);
        else if (job && step) found.push({ jobId: marker.jobId, stepId: marker.stepId, deadlineAt: marker.deadlineAt });
      });
    }
    return found;
  }

  /**
   * The deadline this process last wrote a marker for, per open step: a step written again with
   * the same deadline (its publish marked, a progress report) already has its marker, which only
   * goes when the step ends or its deadline moves. Bounded; an entry forgotten costs one upsert.
   */
  const marked = new Map<string, string>();
  const remember = (stepId: string, deadlineAt: string) => {
    marked.delete(stepId);
    marked.set(stepId, deadlineAt);
    if (marked.size > MARKED_REMEMBERED) marked.delete(marked.keys().next().value!);
  };

  return {
    /** Before writing steps: the markers of the open ones with a deadline (not again for one this process wrote). */
    async beforeWrite(steps: readonly Step[], now: string): Promise<void> {
      const watched = steps.filter((step) => isWatched(step) && marked.get(step.stepId) !== step.deadlineAt);
      if (watched.length === 0) return;
      await guarded("write deadline markers", () =>
        Promise.all(
          watched.map(async (step) => {
            const keys = keysFor(step, step.deadlineAt!);
            await writes.write([
              "upsert",
              { ...keys, jobId: step.jobId, stepId: step.stepId, stepIndex: step.index, deadlineAt: step.deadlineAt, createdAt: now },
              "Merge",
            ]);
            remember(step.stepId, step.deadlineAt!);
          }),
        ),
      );
    },

    /** After writing steps: the markers of those that ended go (queued, best effort). */
    afterWrite(steps: readonly Step[]): void {
      for (const step of steps) {
        if (step.deadlineAt !== null && hasStepEnded(step)) {
          marked.delete(step.stepId);
          writes.defer(["delete", keysFor(step, step.deadlineAt)]);
        }
      }
    },

    /** Markers written for a job that will never be stored (its idempotency key was taken). */
    async forget(steps: readonly Step[]): Promise<void> {
      for (const step of steps) marked.delete(step.stepId);
      await Promise.allSettled(
        steps.filter(isWatched).map((step) => {
          const keys = keysFor(step, step.deadlineAt);
          return deleteIfPresent(client, keys.partitionKey, keys.rowKey);
        }),
      );
    },

    /**
     * Open steps whose deadline is at or before `now`, earliest first, cleaning what it meets: the
     * marker of a step that ended, of a job that ended, of a superseded deadline, and an orphan
     * (no job) once older than `orphanGraceMs`. Each partition is read in key order until it gave
     * `limit` open steps or ran out of expired markers, so stale markers never hide open ones.
     */
    async expired(layout: RowLayout, now: Date, limit: number, orphanGraceMs: number): Promise<ExpiredStep[]> {
      // `~` sorts after `_`: every row key whose deadline is at or before the cutoff is below it.
      const below = `${now.toISOString()}~`;
      const fromShards = await Promise.all(
        Array.from({ length: shards }, async (_, shard) => {
          const partition = `deadline-${shard}`;
          const found: ExpiredStep[] = [];
          for (let after = ""; found.length < limit; ) {
            const rows = await guarded("read deadline markers", () =>
              queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${partition} and RowKey gt ${after} and RowKey lt ${below}`, { limit }),
            );
            found.push(...(await openSteps(layout, rows.map(toMarker), now, orphanGraceMs)));
            if (rows.length < limit) break;
            after = keysOf(rows.at(-1)!).rowKey;
          }
          return found;
        }),
      );
      return fromShards
        .flat()
        .sort((a, b) => a.deadlineAt.localeCompare(b.deadlineAt) || a.stepId.localeCompare(b.stepId))
        .slice(0, limit);
    },

    flush: () => writes.flush(),

    /** Reads (or, on a new table, records) the shard count; refuses one the table was not written with. */
    async init(): Promise<void> {
      shards = await recordedCount(client, {
        name: "deadline-index",
        configured: options.shards ?? null,
        forNewTable: DEFAULT_DEADLINE_SHARDS,
        before: {
          count: SHARDS_BEFORE_RECORDS,
          hasRows: async () =>
            (await queryAll(client, odata`PartitionKey ge ${"deadline-"} and PartitionKey lt ${"deadline."}`, { limit: 1, select: ["PartitionKey"] })).length >
            0,
        },
        variable: "LUCIUS_DEADLINE_SHARDS",
        tableVariable: "LUCIUS_OUTBOX_TABLE or LUCIUS_LEDGER_TABLE (the index table is named after it)",
      });
    },
  };
}

export type DeadlineIndex = ReturnType<typeof createDeadlineIndex>;
