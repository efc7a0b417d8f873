/**
 * The `table` backend: one table per kind. Writes across tables cannot be atomic, so they are
 * ordered so that a crash between any two leaves a state that a retry of the same request, or
 * the sweeper, completes:
 *
 *   1. idempotency claim ∥ due markers  — a crash here leaves a claim without a job (a retry
 *      after the claim timeout takes it over) and orphan markers (the sweep removes them);
 *   2. steps ∥ outbox entries          — invisible until the job row exists: getJob answers
 *      null, the sweep skips them, a retry inserts what is missing;
 *   3. job row ∥ job index row         — the job row is the commit point: from here the job is
 *      read, listed and swept.
 *
 * Later changes write a map's new children first (kept when an earlier try wrote them; the
 * sweep leaves their directives alone until the map's cursor covers them), then the rows that
 * exist, conditionally: children before their map, the job's row (with the change's history
 * entry, one transaction) last; then new rows, outbox entries last. A change cut short leaves
 * steps whose consequences the next touch of the job completes (domain/catch-up.ts), and a child
 * ended but not counted, which is counted late (foldEndedChild). An entry still pending after a
 * crash is published again by the sweeper (same messageId), which then finds the step already
 * initiated and only marks the entry sent.
 */
import { odata, type TableClient } from "@azure/data-tables";
import { ConcurrencyConflictError } from "../../domain/errors.ts";
import { isChildStepId, stepIdFor } from "../../domain/ids.ts";
import { isCovered } from "../../domain/map-step.ts";
import type { HistoryEntry, JobAggregate, OutboxEntry, OutboxWork, Step } from "../../domain/model.ts";
import { hasJobEnded } from "../../domain/transitions.ts";
import type { CreateJobResult, JobChanges, JobStore, SavedChanges } from "../job-store.ts";
import { BEFORE_CHILDREN, childOutboxRow, childRowKeys, childStepRow, isChildOutboxId, listChildRows, readChildren } from "./children.ts";
import { type AzureTableOptions, alreadyExists, createTableClient, deleteRows, guarded, insertIfAbsent, lostConditionalWrite, queryAll } from "./client.ts";
import { findDueWork } from "./due-index.ts";
import { entityToJob, entityToOutbox, entityToStep, jobToEntity, outboxToEntity, stepToEntity } from "./entities.ts";
import { historyEntity, readHistory } from "./history-rows.ts";
import { checkEntity, type Entity } from "./limits.ts";
import { listOutbox, outboxStats } from "./outbox-views.ts";
import { type RowLayout, readRow } from "./rows.ts";
import {
  claimAndMark,
  createSideTables,
  flushSideTables,
  listEndedJobs,
  orphanGraceMs,
  purgeEndedJobs,
  purgeIdempotencyRecords,
  type SideTableNames,
} from "./side-tables.ts";

const JOB_ROW = "job";
const stepRow = (step: Pick<Step, "index" | "stepId">) =>
  isChildStepId(step.stepId) ? childStepRow(step.stepId) : `${String(step.index).padStart(4, "0")}_${step.stepId}`;
const outboxRow = (entry: Pick<OutboxEntry, "outboxId">) => (isChildOutboxId(entry.outboxId) ? childOutboxRow(entry.outboxId) : entry.outboxId);

export interface MultiTableStoreOptions extends AzureTableOptions {
  tables: SideTableNames & { jobs: string; steps: string; outbox: string };
  /** A due marker whose job does not exist is removed once this old. */
  orphanGraceSeconds?: number;
}

export function createMultiTableStore(options: MultiTableStoreOptions): JobStore {
  const jobs = createTableClient(options.tables.jobs, options);
  const steps = createTableClient(options.tables.steps, options);
  const outbox = createTableClient(options.tables.outbox, options);
  const side = createSideTables(options.tables, options);
  const { jobIndex: index, due, deadlines, retention } = side;
  const graceMs = orphanGraceMs(options);
  const layout: RowLayout = { clients: { job: jobs, step: steps, outbox: outbox }, jobRow: JOB_ROW, stepRow, outboxRow, childrenWrittenApart: true };

  /**
   * Inserts, or keeps what an earlier attempt inserted; returns the stored etag either way. With
   * `rewriteIf` (a map's new child row or directive), one stored with that status (cancelled, or
   * withdrawn, by its job's closing while its map's cursor did not cover it yet) is written again,
   * conditionally: the change that now covers it runs it (after a redrive).
   */
  async function insertOrKeep(client: TableClient, entity: Entity, rewriteIf?: string): Promise<string> {
    checkEntity(entity);
    const result = await insertIfAbsent(client, entity);
    if (result.etag) return result.etag;
    const stored = await client.getEntity<Record<string, unknown>>(entity.partitionKey, entity.rowKey);
    if (rewriteIf === undefined || stored.status !== rewriteIf) return stored.etag;
    return replace(client, entity, stored.etag, `${entity.rowKey} (closed before its map reached it)`);
  }

  async function replace(client: TableClient, entity: Entity, etag: string | undefined, what: string): Promise<string> {
    checkEntity(entity);
    try {
      if (etag === undefined) {
        const created = await client.createEntity(entity);
        return created.etag ?? "";
      }
      const updated = await client.updateEntity(entity, "Replace", { etag });
      return updated.etag ?? "";
    } catch (error) {
      if (lostConditionalWrite(error)) throw new ConcurrencyConflictError(`${what} was changed by another writer`, { cause: error });
      throw error;
    }
  }

  /**
   * The job's row with its first history entry, in one transaction (they share the job's
   * partition of the jobs table); no etag when an earlier attempt inserted it.
   */
  async function insertJobRow(jobEntity: Entity, history: HistoryEntry | undefined): Promise<{ etag?: string }> {
    if (!history) return insertIfAbsent(jobs, jobEntity);
    try {
      const response = await jobs.submitTransaction([
        ["create", jobEntity],
        ["create", historyEntity(history)],
      ]);
      return { etag: response.subResponses.find((r) => r.rowKey === JOB_ROW)?.etag ?? "" };
    } catch (error) {
      if (alreadyExists(error)) return {};
      throw error;
    }
  }

  /** The job's row, conditional on its etag, with the change's history entry: one transaction. */
  async function replaceJobRow(jobEntity: Entity, etag: string | undefined, history: HistoryEntry, what: string): Promise<string> {
    checkEntity(jobEntity);
    try {
      const response = await jobs.submitTransaction([
        etag === undefined ? ["create", jobEntity] : ["update", jobEntity, "Replace", { etag }],
        ["upsert", historyEntity(history), "Replace"],
      ]);
      return response.subResponses.find((r) => r.rowKey === JOB_ROW)?.etag ?? "";
    } catch (error) {
      if (lostConditionalWrite(error)) throw new ConcurrencyConflictError(`${what} was changed by another writer`, { cause: error });
      throw error;
    }
  }

  /**
   * Whether each piece of due work may go out: not the directives of children their map's cursor
   * does not cover yet (a change that lost its race wrote them, see saveChanges; the change that
   * covers them will keep them). A job that ended lets them through, to be withdrawn. Applied
   * while the sweep collects its batch, so that they never take a batch's places.
   */
  async function covered(work: readonly OutboxWork[]): Promise<boolean[]> {
    const maps = new Map<string, Promise<Step | null>>();
    const mapOf = (jobId: string, index: number) => {
      const key = `${jobId}/${index}`;
      let read = maps.get(key);
      if (!read) {
        read = guarded("read map step", () => readRow(steps, jobId, stepRow({ index, stepId: stepIdFor(jobId, index) }), entityToStep));
        maps.set(key, read);
      }
      return read;
    };
    return Promise.all(
      work.map(async ({ job, step }) => {
        if (!isChildStepId(step.stepId) || step.itemIndex === undefined || hasJobEnded(job)) return true;
        const map = (await mapOf(job.jobId, step.index))?.map;
        return map !== undefined && isCovered(map, step.itemIndex);
      }),
    );
  }

  async function getJob(jobId: string): Promise<JobAggregate | null> {
    return guarded("read job", async () => {
      const [job, stepRows, outboxRows] = await Promise.all([
        readRow(jobs, jobId, JOB_ROW, entityToJob),
        queryAll<Record<string, unknown>>(steps, `${odata`PartitionKey eq ${jobId}`} and ${BEFORE_CHILDREN}`),
        queryAll<Record<string, unknown>>(outbox, `${odata`PartitionKey eq ${jobId}`} and ${BEFORE_CHILDREN}`),
      ]);
      if (!job) return null;
      return { job, steps: stepRows.map(entityToStep).sort((a, b) => a.index - b.index), outbox: outboxRows.map(entityToOutbox) };
    });
  }

  return {
    writesRowsApart: true,

    async init() {
      await guarded("create tables", () => Promise.all([jobs, steps, outbox, ...side.clients].map((client) => client.createTable())));
      await Promise.all([side.jobIndex.init(), side.deadlines.init()]);
    },

    async createJob(aggregate, claim, keysExpireBefore): Promise<CreateJobResult> {
      const { job } = aggregate;
      const partitionKey = job.jobId;
      const jobEntity = jobToEntity(job, { partitionKey, rowKey: JOB_ROW });
      const stepEntities = aggregate.steps.map((step) => stepToEntity(step, { partitionKey, rowKey: stepRow(step) }));
      const outboxEntities = aggregate.outbox.map((entry) => outboxToEntity(entry, { partitionKey, rowKey: outboxRow(entry) }));
      await guarded("store job", async () => [jobEntity, ...stepEntities, ...outboxEntities].forEach(checkEntity));

      // Round trip 1: the key claimed while the due markers go in (before their entries).
      const claimed = await claimAndMark(side, aggregate, claim, keysExpireBefore);
      if (!claimed.claimed) return { outcome: "key-taken", existing: claimed.existing };
      return guarded("store job", async () => {
        const [stepEtags, outboxEtags] = await Promise.all([
          Promise.all(stepEntities.map((entity) => insertOrKeep(steps, entity))),
          Promise.all(outboxEntities.map((entity) => insertOrKeep(outbox, entity))),
        ]);
        const [inserted, listedNow] = await Promise.all([insertJobRow(jobEntity, aggregate.history), index.write(job)]);
        if (!inserted.etag) {
          // An earlier attempt with this id got as far as the commit point: the job is whole.
          const stored = await getJob(job.jobId);
          if (stored) {
            // Its index row was missing (that attempt stopped before it): list the job as stored.
            if (listedNow) await index.restate(stored.job);
            return { outcome: "stored", aggregate: stored };
          }
        }
        return {
          outcome: "stored",
          aggregate: {
            job: { ...job, etag: inserted.etag ?? "" },
            steps: aggregate.steps.map((step, i) => ({ ...step, etag: stepEtags[i]! })),
            outbox: aggregate.outbox.map((entry, i) => ({ ...entry, etag: outboxEtags[i]! })),
          },
        };
      });
    },

    getJob,

    getHistory: (jobId, after, limit) => guarded("read history", () => readHistory(jobs, jobId, after, limit)),

    getChildren: (jobId, stepIds) => guarded("read children", () => readChildren({ step: steps, outbox }, jobId, stepIds)),

    listChildren: (jobId, stepIndex, from, limit, open = false) => guarded("list children", () => listChildRows(steps, jobId, stepIndex, from, limit, open)),

    getOutboxEntry: (jobId, outboxId) =>
      guarded("read outbox entry", () => readRow(layout.clients.outbox, jobId, layout.outboxRow({ outboxId }), entityToOutbox)),

    listJobs: (tenantId, page, filter) => index.list(tenantId, page, filter),

    async saveChanges(jobId, changes: JobChanges): Promise<SavedChanges> {
      const partitionKey = jobId;
      const entries = changes.outbox ?? [];
      const now = new Date().toISOString();
      await Promise.all([
        due.beforeWrite(entries, now),
        deadlines.beforeWrite(changes.steps ?? [], now),
        retention.markEnded(changes.listingUnchanged ? undefined : changes.job),
      ]);
      const saved = await guarded("save job changes", async () => {
        const result: SavedChanges = { steps: [], outbox: [] };
        // The fence before any row: each written back as it is (a merge of no property), on its
        // etag. Rows land apart here, so it is checked first, not with them.
        if (changes.fence) {
          const { fence } = changes;
          const check = async (client: TableClient, rowKey: string, etag: string | undefined, what: string) => {
            if (!etag) throw new Error(`a fenced row (${what}) needs the etag it was read with`);
            try {
              return (await client.updateEntity({ partitionKey, rowKey }, "Merge", { etag })).etag ?? "";
            } catch (error) {
              if (lostConditionalWrite(error)) throw new ConcurrencyConflictError(`${what} was changed by another writer`, { cause: error });
              throw error;
            }
          };
          result.fenced = {
            steps: await Promise.all(fence.steps.map(async (step) => ({ ...step, etag: await check(steps, stepRow(step), step.etag, `step ${step.stepId}`) }))),
            outbox: await Promise.all(
              fence.outbox.map(async (entry) => ({ ...entry, etag: await check(outbox, outboxRow(entry), entry.etag, `outbox entry ${entry.outboxId}`) })),
            ),
          };
        }
        const changedSteps = changes.steps ?? [];
        // A map's new children first, rows and directives, each kept as it is when an earlier
        // attempt wrote it: their map's row, written after, is what makes them count (its cursor
        // covers them), and a sweep leaves a directive alone until it does (findDueOutbox).
        const newChildIds = new Set(changedSteps.filter((step) => step.etag === undefined && isChildStepId(step.stepId)).map((step) => step.stepId));
        const isNewChildEntry = (entry: OutboxEntry) => entry.etag === undefined && newChildIds.has(entry.stepId);
        const [childEtags, childEntryEtags] = await Promise.all([
          Promise.all(
            changedSteps
              .filter((step) => newChildIds.has(step.stepId))
              .map(async (step) => [step.stepId, await insertOrKeep(steps, stepToEntity(step, { partitionKey, rowKey: stepRow(step) }), "cancelled")] as const),
          ),
          Promise.all(
            entries
              .filter(isNewChildEntry)
              .map(
                async (entry) =>
                  [entry.outboxId, await insertOrKeep(outbox, outboxToEntity(entry, { partitionKey, rowKey: outboxRow(entry) }), "withdrawn")] as const,
              ),
          ),
        ]);
        // Rows that exist, each conditional on its etag: a child's before its map's (a child written
        // and not counted is counted late, see foldEndedChild, where a map that counted a child
        // never written would count it twice), the job's row with the change's history entry last.
        // A lost race midway leaves steps written and the job's row not: the retry, or whoever
        // touches the job next, completes what they imply (domain/catch-up.ts).
        const writeStep = async (step: Step) => ({
          ...step,
          etag: await replace(steps, stepToEntity(step, { partitionKey, rowKey: stepRow(step) }), step.etag, `step ${step.stepId}`),
        });
        const existing = changedSteps.filter((step) => step.etag !== undefined);
        const updatedChildren = await Promise.all(existing.filter((step) => isChildStepId(step.stepId)).map(writeStep));
        const updated = await Promise.all(existing.filter((step) => !isChildStepId(step.stepId)).map(writeStep));
        if (changes.job) {
          const entity = jobToEntity(changes.job, { partitionKey, rowKey: JOB_ROW });
          const etag = changes.history
            ? await replaceJobRow(entity, changes.job.etag, changes.history, `job ${jobId}`)
            : await replace(jobs, entity, changes.job.etag, `job ${jobId}`);
          result.job = { ...changes.job, etag };
        }
        const created = await Promise.all(changedSteps.filter((step) => step.etag === undefined && !newChildIds.has(step.stepId)).map(writeStep));
        const childEtagOf = new Map(childEtags);
        const written = [...updatedChildren, ...updated, ...created];
        result.steps = changedSteps.map((step) =>
          newChildIds.has(step.stepId) ? { ...step, etag: childEtagOf.get(step.stepId)! } : written.find((s) => s.stepId === step.stepId)!,
        );
        const childEntryEtagOf = new Map(childEntryEtags);
        result.outbox = await Promise.all(
          entries.map(async (entry) => ({
            ...entry,
            etag: isNewChildEntry(entry)
              ? childEntryEtagOf.get(entry.outboxId)!
              : await replace(outbox, outboxToEntity(entry, { partitionKey, rowKey: outboxRow(entry) }), entry.etag, `outbox entry ${entry.outboxId}`),
          })),
        );
        return result;
      });
      due.afterWrite(entries, now);
      deadlines.afterWrite(saved.steps);
      // The listing follows the job's status and pause.
      if (changes.job && !changes.listingUnchanged) await index.restate(changes.job);
      return saved;
    },

    findDueOutbox: (now, limit, options) => findDueWork(due, layout, now, limit, graceMs, options?.skip, covered),

    findExpiredSteps: (now, limit) => deadlines.expired(layout, now, limit, graceMs),

    purgeEndedJobs: (endedBefore, limit) =>
      purgeEndedJobs(side, endedBefore, limit, {
        getJob,
        // The job row, the commit point, last: until it goes, a purge cut short is found again and finished.
        deleteRows: (aggregate) =>
          guarded("delete job", async () => {
            const { jobId } = aggregate.job;
            // Children and history rows sort after `~` in their partitions.
            const [childSteps, childEntries, history] = await Promise.all([childRowKeys(steps, jobId), childRowKeys(outbox, jobId), childRowKeys(jobs, jobId)]);
            await Promise.all([
              deleteRows(steps, jobId, [...childSteps, ...aggregate.steps.map(stepRow)]),
              deleteRows(outbox, jobId, [...childEntries, ...aggregate.outbox.map(outboxRow)]),
              deleteRows(jobs, jobId, history),
            ]);
            await deleteRows(jobs, jobId, [JOB_ROW]);
          }),
      }),

    purgeIdempotencyRecords: (createdBefore, limit) => purgeIdempotencyRecords(side, createdBefore, limit),

    listEndedJobs: (range, page) => listEndedJobs(side, range, page),

    listOutbox: (status, page) => listOutbox(due, { ...layout, rowsOfStatus: (s) => odata`status eq ${s}` }, status, page),

    outboxStats: (now) => outboxStats(due, layout, now),

    async ping() {
      await guarded("ping", () => queryAll(jobs, odata`PartitionKey eq ${"~ping"}`, { limit: 1 }));
    },

    async close() {
      await flushSideTables(side);
    },
  };
}
