/** Reading jobs back (docs/API.md): one job with its steps and outbox, or a tenant's listing. */
import { type Caller, holdsTenant } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { ForbiddenError, InvalidCursorError, NotFoundError } from "../domain/errors.ts";
import { isCompensation, predecessorsOf } from "../domain/graph.ts";
import type { JobAggregate, JobFilter, JobSummary, JsonObject, Page, Protocol, StepError, StepProgress } from "../domain/model.ts";
import { encodeCursor, readCursor } from "../storage/cursor.ts";
import type { JobStore } from "../storage/job-store.ts";

export interface JobView {
  jobId: string;
  tenantId: string;
  requestType: string;
  correlationId: string | null;
  status: string;
  /** Paused by an operator: nothing new is dispatched until resumed. */
  paused: boolean;
  /** Times an operator redrove it. */
  redrives: number;
  /** The sequence number of its latest change (its history's, a stream's event id). */
  seq: number;
  createdAt: string;
  updatedAt: string;
  steps: {
    stepId: string;
    index: number;
    name: string;
    topic: string;
    status: string;
    /** The names of the steps it waits for (none for the compensation step). */
    after: string[];
    /** The protocol's onFailure step: it runs only when the job fails. */
    compensation: boolean;
    attempts: number;
    result: JsonObject | null;
    error: StepError | null;
    startedAt: string | null;
    finishedAt: string | null;
    /** The worker's latest progress report. */
    progress: StepProgress | null;
    /** When the current attempt runs out of time, if it has a deadline. */
    deadlineAt: string | null;
    updatedAt: string;
    /** A map step's children by state (its items are paged by GET …/steps/{stepId}/items). */
    map?: MapCounts;
  }[];
  outbox: {
    outboxId: string;
    stepId: string;
    topic: string;
    partitionKey: string;
    status: string;
    attempts: number;
    nextAttemptAt: string | null;
    lastError: string | null;
    sentAt: string | null;
  }[];
}

export interface MapCounts {
  total: number;
  /** Items without a child yet. */
  pending: number;
  running: number;
  succeeded: number;
  failed: number;
}

/** One child of a map step, as the items route shows it. */
export interface ItemView {
  itemIndex: number;
  stepId: string;
  status: string;
  attempts: number;
  result: JsonObject | null;
  error: StepError | null;
}

export interface JobService {
  /** A job of another tenant than the caller's is not found: its existence is not revealed. */
  get(jobId: string, caller: Caller): Promise<JobView>;
  /** Listing a tenant the caller does not hold is refused. */
  list(tenantId: string, limit: number, cursor: string | null, caller: Caller, filter?: JobFilter): Promise<Page<JobSummary>>;
  /** A map step's children in item order, paged; items not yet dispatched are not listed. */
  items(jobId: string, stepId: string, limit: number, cursor: string | null, caller: Caller): Promise<Page<ItemView>>;
}

export interface JobServiceOptions {
  store: JobStore;
  /** For each step's place in its protocol's graph. */
  protocols: Pick<ProtocolRegistry, "get">;
}

export function createJobService(options: JobServiceOptions): JobService {
  const { store, protocols } = options;
  return {
    async get(jobId, caller) {
      const aggregate = await store.getJob(jobId);
      if (!aggregate || !holdsTenant(caller, aggregate.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
      return toView(aggregate, protocols.get(aggregate.job.requestType));
    },
    async items(jobId, stepId, limit, cursor, caller) {
      const aggregate = await store.getJob(jobId);
      if (!aggregate || !holdsTenant(caller, aggregate.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
      const step = aggregate.steps.find((s) => s.stepId === stepId);
      if (!step?.map) throw new NotFoundError(`job ${jobId} has no map step ${stepId}`);
      const from = cursor === null ? 0 : Number(readCursor(cursor));
      if (!Number.isInteger(from) || from < 0) throw new InvalidCursorError("the cursor is not one this service issued");
      const children = await store.listChildren(jobId, step.index, from, limit);
      const last = children.at(-1);
      return {
        items: children.map((c) => ({ itemIndex: c.itemIndex!, stepId: c.stepId, status: c.status, attempts: c.attempts, result: c.result, error: c.error })),
        nextCursor: children.length === limit && last ? encodeCursor(String(last.itemIndex! + 1)) : null,
      };
    },
    async list(tenantId, limit, cursor, caller, filter = {}) {
      if (!holdsTenant(caller, tenantId)) throw new ForbiddenError(`not allowed to read the jobs of tenant '${tenantId}'`, "tenant-not-held");
      return store.listJobs(tenantId, { limit, cursor }, filter);
    },
  };
}

export function toView({ job, steps, outbox }: JobAggregate, protocol: Protocol | undefined): JobView {
  const nameOf = (index: number) => steps.find((s) => s.index === index)?.name ?? String(index);
  return {
    jobId: job.jobId,
    tenantId: job.tenantId,
    requestType: job.requestType,
    correlationId: job.correlationId,
    status: job.status,
    paused: job.paused,
    redrives: job.redrives,
    seq: job.changes,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    steps: [...steps]
      .sort((a, b) => a.index - b.index)
      .map((s) => ({
        stepId: s.stepId,
        index: s.index,
        name: s.name,
        topic: s.topic,
        status: s.status,
        after: isCompensation(protocol, s) || !protocol ? [] : predecessorsOf(protocol, s.index).map(nameOf),
        compensation: isCompensation(protocol, s),
        attempts: s.attempts,
        result: s.result,
        error: s.error,
        startedAt: s.startedAt,
        finishedAt: s.finishedAt,
        progress: s.progress,
        deadlineAt: s.deadlineAt,
        updatedAt: s.updatedAt,
        ...(s.map
          ? { map: { total: s.map.total, pending: s.map.total - s.map.next, running: s.map.running, succeeded: s.map.succeeded, failed: s.map.failed } }
          : {}),
      })),
    outbox: outbox.map((o) => ({
      outboxId: o.outboxId,
      stepId: o.stepId,
      topic: o.topic,
      partitionKey: o.partitionKey,
      status: o.status,
      attempts: o.attempts,
      nextAttemptAt: o.nextAttemptAt,
      lastError: o.lastError,
      sentAt: o.sentAt,
    })),
  };
}
