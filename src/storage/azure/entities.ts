/**
 * Domain entities ↔ table entities, shared by the `table` and `ledger` layouts (they differ only
 * in keys). Nulls are left out (the SDK drops them anyway); JSON goes in as chunked strings.
 */
import { Buffer } from "node:buffer";
import type { TableEntityResult } from "@azure/data-tables";
import type {
  HistoryEntry,
  IdempotencyRecord,
  Job,
  JobCallback,
  JobFailure,
  JobStatus,
  JobSummary,
  MapProgress,
  OutboxEntry,
  OutboxStatus,
  Step,
  StepStatus,
  WebhookDelivery,
} from "../../domain/model.ts";
import { chunkString, type Entity, joinChunks } from "./limits.ts";

type Keys = { partitionKey: string; rowKey: string };
type Stored = TableEntityResult<Record<string, unknown>>;

/** Kind marker on every row, so one partition of the ledger table can hold several kinds. */
export const KIND = { job: "job", step: "step", outbox: "outbox", history: "history" } as const;

function optional(value: string | null): string | undefined {
  return value === null ? undefined : value;
}

/** The SDK types keys as optional; stored rows always have them. */
export function keysOf(entity: Stored): { partitionKey: string; rowKey: string } {
  return { partitionKey: entity.partitionKey ?? "", rowKey: entity.rowKey ?? "" };
}

function text(entity: Stored, name: string): string {
  const value = entity[name];
  if (typeof value !== "string") throw new Error(`stored ${entity.rowKey} lacks ${name}`);
  return value;
}

function nullableText(entity: Stored, name: string): string | null {
  const value = entity[name];
  return typeof value === "string" ? value : null;
}

function integer(entity: Stored, name: string): number {
  return Number(entity[name]);
}

function etagOf(entity: Stored): string {
  return entity.etag;
}

export function jobToEntity(job: Job, keys: Keys): Entity {
  return {
    ...keys,
    kind: KIND.job,
    jobId: job.jobId,
    tenantId: job.tenantId,
    requestType: job.requestType,
    protocolVersion: job.protocolVersion,
    correlationId: optional(job.correlationId),
    idempotencyKey: optional(job.idempotencyKey),
    status: job.status,
    paused: job.paused,
    redrives: job.redrives,
    changes: job.changes,
    ...(job.redrivenBy === undefined ? {} : { redrivenBy: job.redrivenBy }),
    ...(job.callback === undefined ? {} : { callback: JSON.stringify(job.callback) }),
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    ...chunkString("payload", JSON.stringify(job.payload)),
  };
}

export function entityToJob(entity: Stored): Job {
  return {
    jobId: text(entity, "jobId"),
    tenantId: text(entity, "tenantId"),
    requestType: text(entity, "requestType"),
    protocolVersion: integer(entity, "protocolVersion"),
    correlationId: nullableText(entity, "correlationId"),
    idempotencyKey: nullableText(entity, "idempotencyKey"),
    payload: JSON.parse(joinChunks(entity, "payload") ?? "{}"),
    status: text(entity, "status") as JobStatus,
    // Rows written before repairs existed have none of these.
    paused: entity.paused === true,
    redrives: Number(entity.redrives ?? 0),
    changes: Number(entity.changes ?? 0),
    ...(typeof entity.redrivenBy === "string" ? { redrivenBy: entity.redrivenBy } : {}),
    ...(typeof entity.callback === "string" ? { callback: JSON.parse(entity.callback) as JobCallback } : {}),
    createdAt: text(entity, "createdAt"),
    updatedAt: text(entity, "updatedAt"),
    etag: etagOf(entity),
  };
}

export function stepToEntity(step: Step, keys: Keys): Entity {
  return {
    ...keys,
    kind: KIND.step,
    jobId: step.jobId,
    stepId: step.stepId,
    index: step.index,
    name: step.name,
    topic: step.topic,
    status: step.status,
    attempts: step.attempts,
    startedAt: optional(step.startedAt),
    finishedAt: optional(step.finishedAt),
    deadlineAt: optional(step.deadlineAt),
    ...(step.attemptDeadlineAt ? { attemptDeadlineAt: step.attemptDeadlineAt } : {}),
    updatedAt: step.updatedAt,
    ...(step.error === null ? {} : { error: JSON.stringify(step.error) }),
    ...(step.events.length === 0 ? {} : { events: JSON.stringify(step.events) }),
    ...(step.result === null ? {} : chunkString("result", JSON.stringify(step.result))),
    ...(step.progress === null ? {} : { progress: JSON.stringify(step.progress) }),
    ...(step.map ? chunkString("map", JSON.stringify(step.map)) : {}),
    ...(step.compensation ? { compensation: true } : {}),
    ...(step.itemIndex === undefined ? {} : { itemIndex: step.itemIndex, ...chunkString("item", JSON.stringify(step.item ?? null)) }),
  };
}

export function entityToStep(entity: Stored): Step {
  return {
    jobId: text(entity, "jobId"),
    stepId: text(entity, "stepId"),
    index: integer(entity, "index"),
    name: text(entity, "name"),
    topic: text(entity, "topic"),
    status: text(entity, "status") as StepStatus,
    attempts: integer(entity, "attempts"),
    result: parseOr(joinChunks(entity, "result"), null),
    error: parseOr(nullableText(entity, "error") ?? undefined, null),
    progress: parseOr(nullableText(entity, "progress") ?? undefined, null),
    events: parseOr(nullableText(entity, "events") ?? undefined, []),
    startedAt: nullableText(entity, "startedAt"),
    finishedAt: nullableText(entity, "finishedAt"),
    deadlineAt: nullableText(entity, "deadlineAt"),
    ...(typeof entity.attemptDeadlineAt === "string" ? { attemptDeadlineAt: entity.attemptDeadlineAt } : {}),
    updatedAt: text(entity, "updatedAt"),
    ...mapPartsOf(entity),
    ...(entity.compensation === true ? { compensation: true } : {}),
    etag: etagOf(entity),
  };
}

/** A map step's progress, or a child's item, when the row has them. */
function mapPartsOf(entity: Stored): Pick<Step, "map" | "item" | "itemIndex"> {
  const map = joinChunks(entity, "map");
  if (map !== undefined) return { map: JSON.parse(map) as MapProgress };
  if (typeof entity.itemIndex === "number") return { itemIndex: entity.itemIndex, item: JSON.parse(joinChunks(entity, "item") ?? "null") };
  return {};
}

function parseOr<T>(json: string | undefined, fallback: T): T {
  return json === undefined ? fallback : (JSON.parse(json) as T);
}

export function outboxToEntity(entry: OutboxEntry, keys: Keys): Entity {
  return {
    ...keys,
    kind: KIND.outbox,
    jobId: entry.jobId,
    outboxId: entry.outboxId,
    stepId: entry.stepId,
    stepIndex: entry.stepIndex,
    topic: entry.topic,
    partitionKey_: entry.partitionKey,
    traceparent: optional(entry.traceparent),
    ...(entry.heartbeatSeconds ? { heartbeatSeconds: entry.heartbeatSeconds } : {}),
    ...(entry.timeoutSeconds ? { timeoutSeconds: entry.timeoutSeconds } : {}),
    status: entry.status,
    attempts: entry.attempts,
    nextAttemptAt: optional(entry.nextAttemptAt),
    lease: optional(entry.lease),
    sentAt: optional(entry.sentAt),
    createdAt: entry.createdAt,
    updatedAt: entry.updatedAt,
    ...(entry.lastError === null ? {} : chunkString("lastError", entry.lastError)),
    ...(Object.keys(entry.results).length === 0 ? {} : chunkString("results", JSON.stringify(entry.results))),
    ...(entry.failure ? { failure: JSON.stringify(entry.failure) } : {}),
    ...(entry.webhook ? chunkString("webhook", JSON.stringify(entry.webhook)) : {}),
  };
}

export function entityToOutbox(entity: Stored): OutboxEntry {
  return {
    outboxId: text(entity, "outboxId"),
    jobId: text(entity, "jobId"),
    stepId: text(entity, "stepId"),
    stepIndex: integer(entity, "stepIndex"),
    topic: text(entity, "topic"),
    partitionKey: text(entity, "partitionKey_"),
    traceparent: nullableText(entity, "traceparent"),
    ...(typeof entity.heartbeatSeconds === "number" ? { heartbeatSeconds: entity.heartbeatSeconds } : {}),
    ...(typeof entity.timeoutSeconds === "number" ? { timeoutSeconds: entity.timeoutSeconds } : {}),
    results: JSON.parse(joinChunks(entity, "results") ?? "{}"),
    ...(typeof entity.failure === "string" ? { failure: JSON.parse(entity.failure) as JobFailure } : {}),
    ...(typeof entity.webhook === "string" ? { webhook: JSON.parse(joinChunks(entity, "webhook")!) as WebhookDelivery } : {}),
    status: text(entity, "status") as OutboxStatus,
    attempts: integer(entity, "attempts"),
    nextAttemptAt: nullableText(entity, "nextAttemptAt"),
    lease: nullableText(entity, "lease"),
    lastError: joinChunks(entity, "lastError") ?? null,
    sentAt: nullableText(entity, "sentAt"),
    createdAt: text(entity, "createdAt"),
    updatedAt: text(entity, "updatedAt"),
    etag: etagOf(entity),
  };
}

/** Keys may not contain `/ \ # ?`; an idempotency key may. base64url keeps it exact and legal. */
export function idempotencyKeys(tenantId: string, key: string): Keys {
  return { partitionKey: tenantId, rowKey: Buffer.from(key, "utf8").toString("base64url") };
}

export function idempotencyToEntity(record: IdempotencyRecord): Entity {
  return {
    ...idempotencyKeys(record.tenantId, record.key),
    key: record.key,
    fingerprint: record.fingerprint,
    jobId: record.jobId,
    createdAt: record.createdAt,
  };
}

export function entityToIdempotency(entity: Stored): IdempotencyRecord {
  return {
    tenantId: keysOf(entity).partitionKey,
    key: text(entity, "key"),
    fingerprint: text(entity, "fingerprint"),
    jobId: text(entity, "jobId"),
    createdAt: text(entity, "createdAt"),
    etag: etagOf(entity),
  };
}

/**
 * Job index rows sort newest first: the row key is the (time-ordered) job id with every hex
 * digit complemented, so ascending row keys are descending job ids.
 */
export function indexRowKey(jobId: string): string {
  return jobId.replace(/[0-9a-f]/g, (digit) => (15 - parseInt(digit, 16)).toString(16));
}

export function summaryToEntity(job: Job): Entity {
  return {
    partitionKey: job.tenantId,
    rowKey: indexRowKey(job.jobId),
    jobId: job.jobId,
    tenantId: job.tenantId,
    requestType: job.requestType,
    correlationId: optional(job.correlationId),
    status: job.status,
    paused: job.paused,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
  };
}

export function entityToSummary(entity: Stored): JobSummary {
  return {
    jobId: text(entity, "jobId"),
    // The partition is `<tenant>~<bucket>` with buckets; rows of the one-bucket layout before it named no tenant.
    tenantId: nullableText(entity, "tenantId") ?? keysOf(entity).partitionKey,
    requestType: text(entity, "requestType"),
    correlationId: nullableText(entity, "correlationId"),
    // Rows written before the index followed the status have none.
    status: (nullableText(entity, "status") ?? "accepted") as JobStatus,
    paused: entity.paused === true,
    createdAt: text(entity, "createdAt"),
    updatedAt: nullableText(entity, "updatedAt") ?? text(entity, "createdAt"),
  };
}

export function historyToEntity(entry: HistoryEntry, keys: Keys): Entity {
  const { jobId: _, seq, at, ...rest } = entry;
  return { ...keys, kind: KIND.history, seq, at, ...chunkString("entry", JSON.stringify(rest)) };
}

export function entityToHistory(entity: Stored, jobId: string): HistoryEntry {
  return { jobId, seq: integer(entity, "seq"), at: text(entity, "at"), ...JSON.parse(joinChunks(entity, "entry") ?? "{}") };
}
