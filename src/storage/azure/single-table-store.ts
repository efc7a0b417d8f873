/**
 * The `ledger` backend: Job, Step and Outbox rows of one job share a partition of one table, so
 * a job is created in one entity-group transaction, and so is every later change of several of
 * its rows. Idempotency records and the job index keep their own tables.
 *
 * Intake costs two sequential round trips: (1) the idempotency claim beside the due markers,
 * (2) the job transaction beside the job index row.
 *
 * Row keys: `JOB`, `STEP_<index, 4 digits>_<stepId>`, `OUTBOX_<outboxId>`, and after `~` the map
 * children and the history (docs/STORAGE.md). The
 * separator is `_` because Azure forbids `#`, `/`, `\` and `?` in keys.
 */
import { odata, type TableTransactionEntityResponse, type TransactionAction } from "@azure/data-tables";
import { ConcurrencyConflictError } from "../../domain/errors.ts";
import { isChildStepId } from "../../domain/ids.ts";
import type { JobAggregate, OutboxEntry, Step } from "../../domain/model.ts";
import type { CreateJobResult, JobChanges, JobStore } from "../job-store.ts";
import { BEFORE_CHILDREN, childOutboxRow, childRowKeys, childStepRow, isChildOutboxId, listChildRows, readChildren } from "./children.ts";
import { type AzureTableOptions, alreadyExists, createTableClient, deleteRows, guarded, lostConditionalWrite, queryAll, toDomainError } from "./client.ts";
import { findDueWork, takeDueWork } from "./due-index.ts";
import { entityToJob, entityToOutbox, entityToStep, jobToEntity, KIND, outboxToEntity, stepToEntity } from "./entities.ts";
import { historyEntity, readHistory } from "./history-rows.ts";
import { checkTransaction, type Entity } from "./limits.ts";
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

const KEY_SEPARATOR = "_";
export const JOB_ROW = "JOB";
export const stepRow = (step: Pick<Step, "index" | "stepId">) =>
  isChildStepId(step.stepId) ? childStepRow(step.stepId) : ["STEP", String(step.index).padStart(4, "0"), step.stepId].join(KEY_SEPARATOR);
export const outboxRow = (entry: Pick<OutboxEntry, "outboxId">) =>
  isChildOutboxId(entry.outboxId) ? childOutboxRow(entry.outboxId) : ["OUTBOX", entry.outboxId].join(KEY_SEPARATOR);

export interface SingleTableStoreOptions extends AzureTableOptions {
  tables: SideTableNames & { ledger: string };
  /** A due marker whose job does not exist is removed once this old. */
  orphanGraceSeconds?: number;
}

export function createSingleTableStore(options: SingleTableStoreOptions): JobStore {
  const ledger = createTableClient(options.tables.ledger, options);
  const side = createSideTables(options.tables, options);
  const { jobIndex: index, due, deadlines, retention } = side;
  const graceMs = orphanGraceMs(options);
  const layout: RowLayout = { clients: { job: ledger, step: ledger, outbox: ledger }, jobRow: JOB_ROW, stepRow, outboxRow };

  function decode(rows: Awaited<ReturnType<typeof queryAll<Record<string, unknown>>>>): JobAggregate | null {
    const jobRow = rows.find((r) => r.kind === KIND.job);
    if (!jobRow) return null;
    return {
      job: entityToJob(jobRow),
      steps: rows
        .filter((r) => r.kind === KIND.step)
        .map(entityToStep)
        .sort((a, b) => a.index - b.index),
      outbox: rows.filter((r) => r.kind === KIND.outbox).map(entityToOutbox),
    };
  }

  async function getJob(jobId: string): Promise<JobAggregate | null> {
    return decode(await guarded("read job", () => queryAll<Record<string, unknown>>(ledger, `${odata`PartitionKey eq ${jobId}`} and ${BEFORE_CHILDREN}`)));
  }

  /**
   * One entity (a lease, an outcome of an entry alone) is one conditional call; several go in one
   * entity-group transaction. Both are atomic; a transaction costs the storage more.
   */
  async function write(actions: TransactionAction[], entities: Entity[]): Promise<Map<string, string>> {
    const [only] = actions;
    if (actions.length === 1 && only) {
      const [kind, entity] = only;
      const response =
        kind === "update" ? await ledger.updateEntity(entity, only[2] ?? "Replace", only[3] as { etag: string }) : await ledger.createEntity(entity);
      return new Map([[entity.rowKey, response.etag ?? ""]]);
    }
    return withEtags(entities, (await ledger.submitTransaction(actions)).subResponses);
  }

  function withEtags(entities: Entity[], responses: TableTransactionEntityResponse[]): Map<string, string> {
    const etags = new Map<string, string>();
    entities.forEach((entity, i) => {
      const etag = responses.find((r) => r.rowKey === entity.rowKey)?.etag ?? responses[i]?.etag;
      if (etag) etags.set(entity.rowKey, etag);
    });
    return etags;
  }

  return {
    async init() {
      await guarded("create tables", () => Promise.all([ledger, ...side.clients].map((client) => client.createTable())));
      await Promise.all([side.jobIndex.init(), side.deadlines.init()]);
    },

    async createJob(aggregate, claim, keysExpireBefore): Promise<CreateJobResult> {
      const { job } = aggregate;
      const partitionKey = job.jobId;
      const entities = [
        jobToEntity(job, { partitionKey, rowKey: JOB_ROW }),
        ...aggregate.steps.map((step) => stepToEntity(step, { partitionKey, rowKey: stepRow(step) })),
        ...aggregate.outbox.map((entry) => outboxToEntity(entry, { partitionKey, rowKey: outboxRow(entry) })),
        ...(aggregate.history ? [historyEntity(aggregate.history)] : []),
      ];
      await guarded("store job", async () => checkTransaction(entities));

      // Round trip 1: the key claimed while the due markers go in (before their entries).
      const claimed = await claimAndMark(side, aggregate, claim, keysExpireBefore);
      if (!claimed.claimed) return { outcome: "key-taken", existing: claimed.existing };

      // Round trip 2: the job in one transaction, beside its index row.
      const [transaction, indexRow] = await Promise.allSettled([
        ledger.submitTransaction(entities.map((entity): TransactionAction => ["create", entity])),
        index.write(job),
      ]);
      if (transaction.status === "rejected") {
        // The job exists: an earlier attempt with this id committed it (atomically, so wholly).
        const stored = alreadyExists(transaction.reason) ? await getJob(job.jobId) : null;
        if (!stored) throw toDomainError(transaction.reason, "store job");
        if (indexRow.status === "rejected") throw indexRow.reason;
        // Its index row was missing (that attempt stopped before it): list the job as stored.
        if (indexRow.value) await index.restate(stored.job);
        return { outcome: "stored", aggregate: stored };
      }
      // Committed but not listed yet: the client's retry (same key) writes the row again.
      if (indexRow.status === "rejected") throw indexRow.reason;
      const etags = withEtags(entities, transaction.value.subResponses);
      return {
        outcome: "stored",
        aggregate: {
          job: { ...job, etag: etags.get(JOB_ROW)! },
          steps: aggregate.steps.map((step) => ({ ...step, etag: etags.get(stepRow(step))! })),
          outbox: aggregate.outbox.map((entry) => ({ ...entry, etag: etags.get(outboxRow(entry))! })),
        },
      };
    },

    getJob,

    getHistory: (jobId, after, limit) => guarded("read history", () => readHistory(ledger, jobId, after, limit)),

    getChildren: (jobId, stepIds) => guarded("read children", () => readChildren({ step: ledger, outbox: ledger }, jobId, stepIds)),

    listChildren: (jobId, stepIndex, from, limit, open = false) => guarded("list children", () => listChildRows(ledger, jobId, stepIndex, from, limit, open)),

    getOutboxEntry: (jobId, outboxId) =>
      guarded("read outbox entry", () => readRow(layout.clients.outbox, jobId, layout.outboxRow({ outboxId }), entityToOutbox)),

    listJobs: (tenantId, page, filter) => index.list(tenantId, page, filter),

    async saveChanges(jobId, changes: JobChanges) {
      const partitionKey = jobId;
      const actions: TransactionAction[] = [];
      const entities: Entity[] = [];
      const add = (entity: Entity, etag: string | undefined) => {
        entities.push(entity);
        actions.push(etag === undefined ? ["create", entity] : ["update", entity, "Replace", { etag }]);
      };
      const fenceRow = (rowKey: string, etag: string | undefined) => {
        if (!etag) throw new Error(`a fenced row (${rowKey}) needs the etag it was read with`);
        const entity = { partitionKey, rowKey };
        entities.push(entity);
        actions.push(["update", entity, "Merge", { etag }]);
      };
      if (changes.job) add(jobToEntity(changes.job, { partitionKey, rowKey: JOB_ROW }), changes.job.etag);
      for (const step of changes.steps ?? []) add(stepToEntity(step, { partitionKey, rowKey: stepRow(step) }), step.etag);
      for (const entry of changes.outbox ?? []) add(outboxToEntity(entry, { partitionKey, rowKey: outboxRow(entry) }), entry.etag);
      // The fence: each row written back as it is (a merge of no property), on its etag.
      const fence = changes.fence;
      for (const step of fence?.steps ?? []) fenceRow(stepRow(step), step.etag);
      for (const entry of fence?.outbox ?? []) fenceRow(outboxRow(entry), entry.etag);
      if (changes.history) {
        // Its slot may hold an older entry (MAX_HISTORY_ENTRIES ago): overwritten, unconditionally;
        // the job's row, conditional in the same transaction, orders the entries.
        const entity = historyEntity(changes.history);
        entities.push(entity);
        actions.push(["upsert", entity, "Replace"]);
      }
      await guarded("save job changes", async () => checkTransaction(entities));

      const outbox = changes.outbox ?? [];
      const now = new Date().toISOString();
      await Promise.all([
        due.beforeWrite(outbox, now),
        deadlines.beforeWrite(changes.steps ?? [], now),
        retention.markEnded(changes.listingUnchanged ? undefined : changes.job),
      ]);
      const etags = await guarded("save job changes", async () => {
        try {
          return await write(actions, entities);
        } catch (error) {
          if (lostConditionalWrite(error)) throw new ConcurrencyConflictError(`job ${jobId} was changed by another writer`, { cause: error });
          throw error;
        }
      });
      due.afterWrite(outbox, now);
      deadlines.afterWrite(changes.steps ?? []);
      // The listing follows the job's status and pause.
      if (changes.job && !changes.listingUnchanged) await index.restate(changes.job);
      return {
        ...(changes.job ? { job: { ...changes.job, etag: etags.get(JOB_ROW)! } } : {}),
        steps: (changes.steps ?? []).map((step) => ({ ...step, etag: etags.get(stepRow(step))! })),
        outbox: outbox.map((entry) => ({ ...entry, etag: etags.get(outboxRow(entry))! })),
        ...(fence
          ? {
              fenced: {
                steps: fence.steps.map((step) => ({ ...step, etag: etags.get(stepRow(step))! })),
                outbox: fence.outbox.map((entry) => ({ ...entry, etag: etags.get(outboxRow(entry))! })),
              },
            }
          : {}),
      };
    },

    findDueOutbox: (now, limit, options) => findDueWork(due, layout, now, limit, graceMs, options?.skip),

    takeDueOutbox: (cutoff, limit, lease, options) => takeDueWork(due, layout, cutoff, limit, graceMs, lease, options?.skip),

    leaseDueMarker: (entry, lease) => due.leaseMarkerOf(entry.outboxId, lease),

    findExpiredSteps: (now, limit) => deadlines.expired(layout, now, limit, graceMs),

    purgeEndedJobs: (endedBefore, limit) =>
      purgeEndedJobs(side, endedBefore, limit, {
        getJob,
        // The job row last: until it goes, a purge cut short is found again and finished.
        deleteRows: (aggregate) =>
          guarded("delete job", async () => {
            const children = await childRowKeys(ledger, aggregate.job.jobId);
            await deleteRows(ledger, aggregate.job.jobId, [...children, ...aggregate.steps.map(stepRow), ...aggregate.outbox.map(outboxRow), JOB_ROW]);
          }),
      }),

    purgeIdempotencyRecords: (createdBefore, limit) => purgeIdempotencyRecords(side, createdBefore, limit),

    listEndedJobs: (range, page) => listEndedJobs(side, range, page),

    listOutbox: (status, page) => listOutbox(due, { ...layout, rowsOfStatus: (s) => odata`kind eq ${KIND.outbox} and status eq ${s}` }, status, page),

    outboxStats: (now) => outboxStats(due, layout, now),

    async ping() {
      await guarded("ping", () => queryAll(ledger, odata`PartitionKey eq ${"~ping"}`, { limit: 1 }));
    },

    async close() {
      await flushSideTables(side);
    },
  };
}
