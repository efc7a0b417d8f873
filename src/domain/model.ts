/**
 * The orchestrator's vocabulary (docs/ARCHITECTURE.md). Entities are plain data so that every backend
 * stores exactly what the transition functions produced.
 */

export const JOB_STATUSES = ["accepted", "in_progress", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** `skipped`: its condition (`when`) was false; it counts as done for the steps after it. */
export type StepStatus = "pending" | "initiated" | "succeeded" | "failed" | "skipped" | "cancelled";
/** `withdrawn`: its job ended before it was sent; never sent, never counted as a failure. */
export type OutboxStatus = "pending" | "sent" | "failed" | "withdrawn";

/** JSON object as received from a client: the command payload. */
export type JsonObject = { [key: string]: unknown };

/**
 * Opaque concurrency token of a stored entity (an Azure ETag, a counter in memory).
 * Absent on an entity that was never stored.
 */
export interface Versioned {
  etag?: string;
}

export interface Job extends Versioned {
  jobId: string;
  tenantId: string;
  requestType: string;
  protocolVersion: number;
  correlationId: string | null;
  idempotencyKey: string | null;
  payload: JsonObject;
  status: JobStatus;
  /** Paused by an operator: nothing new is dispatched until resumed (see domain/repair.ts). */
  paused: boolean;
  /** Times an operator redrove it after it failed or was cancelled (at most LUCIUS_MAX_REDRIVES). */
  redrives: number;
  /** Changes recorded in its history so far: the sequence number of the latest entry. */
  changes: number;
  /** The bulk operation that redrove it last, if one did: an operation redrives a job once. */
  redrivenBy?: string;
  /** Where its client is told of its changes (webhooks), and of which. */
  callback?: JobCallback;
  createdAt: string;
  updatedAt: string;
}

/** What a worker reported about a failed step. */
export interface StepError {
  code: string;
  message: string;
  retryable: boolean;
}

/** A worker's latest progress report on a step. */
export interface StepProgress {
  /** 0–100, when the worker said. */
  percent: number | null;
  message: string | null;
  at: string;
}

export interface Step extends Versioned {
  jobId: string;
  stepId: string;
  index: number;
  name: string;
  topic: string;
  status: StepStatus;
  /** Directives issued for this step so far (a retryable failure issues another). */
  attempts: number;
  result: JsonObject | null;
  error: StepError | null;
  /** Event ids already applied to this step (the latest 100): a repeat changes nothing. */
  events: string[];
  /** The latest progress the worker reported, if any. */
  progress: StepProgress | null;
  /** A map step's progress over its items (see MapProgress); absent on other steps. */
  map?: MapProgress;
  /** A map step's child: the item it works on, and its index in the list. */
  item?: unknown;
  itemIndex?: number;
  /** The protocol's `onFailure` step, kept last: it runs only when the job fails. */
  compensation?: boolean;
  /**
   * When the current attempt runs out of time (see domain/step-deadlines.ts); null when the step
   * was never dispatched or has no timeout. Kept after the step ends, so its marker can be found.
   */
  deadlineAt: string | null;
  /**
   * With a heartbeat: the whole attempt's end (its timeout), while `deadlineAt` is the earlier of
   * that and the next heartbeat due. Absent without a heartbeat.
   */
  attemptDeadlineAt?: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
}

export interface OutboxEntry extends Versioned {
  outboxId: string;
  jobId: string;
  stepId: string;
  /** The index of the step it starts: lets storage find the step row without a query. */
  stepIndex: number;
  topic: string;
  partitionKey: string;
  /** W3C trace context of the request that created the entry, carried to the message. */
  traceparent: string | null;
  /** The results of the step's predecessors (direct and indirect) by step name, as they were when it was issued: carried to the message. */
  results: Record<string, JsonObject>;
  /** For the compensation step (the protocol's `onFailure`): which step failed the job, and how. */
  failure?: JobFailure;
  /** The step's heartbeat interval, told to the worker in the message. */
  heartbeatSeconds?: number;
  /** How long the attempt may run, counted from its send, told to the worker in the message. */
  timeoutSeconds?: number;
  /** A webhook delivery (domain/webhooks.ts) instead of a step's directive: where, and what. */
  webhook?: WebhookDelivery;
  status: OutboxStatus;
  attempts: number;
  nextAttemptAt: string | null;
  /** The token of the sweep that leased the entry (see leaseEntry); null when none holds it. */
  lease: string | null;
  lastError: string | null;
  sentAt: string | null;
  createdAt: string;
  updatedAt: string;
}

/**
 * Where a map step stands: its items are dispatched as children (rows of their own, created
 * `maxConcurrency` at a time as earlier ones end), `next` is the first item without a child.
 */
export interface MapProgress {
  total: number;
  next: number;
  running: number;
  succeeded: number;
  failed: number;
  /** The indexes of the items whose child failed, in the order they failed. */
  failedItems: number[];
  /**
   * After a redrive: items whose child exists but did not succeed, to run again (their next
   * attempt) before `next`, as room in `maxConcurrency` allows.
   */
  rerun?: number[];
  /**
   * The items whose end the counts above include, as a bitset (base64, bit i for item i): on
   * `table` a child's row and its map's row are written one after the other, and a child found
   * ended but not counted is counted late instead of never (see foldEndedChild). Absent on maps
   * started before it existed.
   */
  counted?: string;
}

/** Why a job failed, as its compensation step is told. */
export interface JobFailure {
  step: string;
  error: StepError;
}

/** A job and everything that belongs to it, as one unit of storage. */
export interface JobAggregate {
  job: Job;
  steps: Step[];
  outbox: OutboxEntry[];
}

/** One directive with what its message needs: the dispatcher's and the sweeper's unit of work. */
export interface OutboxWork {
  job: Job;
  step: Step;
  entry: OutboxEntry;
}

/** (tenantId, key) → the request it was first used for and the job it created. */
export interface IdempotencyRecord extends Versioned {
  tenantId: string;
  key: string;
  fingerprint: string;
  jobId: string;
  createdAt: string;
}

/** One row of the per-tenant job listing, newest first. */
export interface JobSummary {
  jobId: string;
  tenantId: string;
  requestType: string;
  correlationId: string | null;
  status: JobStatus;
  paused: boolean;
  createdAt: string;
  updatedAt: string;
}

/** What a listing may be narrowed to; every given field must match. */
export interface JobFilter {
  status?: JobStatus;
  paused?: boolean;
  requestType?: string;
  correlationId?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Where a step's messages are partitioned: by job, by tenant, or by a value in the payload. */
export type PartitionKeyRule = { kind: "jobId" } | { kind: "tenantId" } | { kind: "pointer"; pointer: string };

/**
 * A step's condition, evaluated once its predecessors are done, against `{ payload, results }`:
 * the value at `pointer` equals a value, is one of several, or exists (or not).
 */
export type StepCondition = { pointer: string; equals: unknown } | { pointer: string; in: unknown[] } | { pointer: string; exists: boolean };

/** A step mapped over a list: `items` points into `{ payload, results }`. */
export interface MapDefinition {
  items: string;
  /** Children in flight at most (1–1000). */
  maxConcurrency: number;
  /** A longer list fails the step (1–10000). */
  maxItems: number;
  /** The share of children that may fail with the step still succeeding (0–100). */
  toleratedFailurePercent: number;
}

export interface ProtocolStep {
  name: string;
  /** The indexes of the steps it waits for; absent: the step before it (none for the first). */
  after?: number[];
  /** Dispatched only when this holds; else `skipped`. */
  when?: StepCondition;
  /** One child per item of a list instead of one message (see MapDefinition). */
  map?: MapDefinition;
  topic: string;
  partitionKey: PartitionKeyRule;
  /** Directives a retryable failure may lead to, the first included (default 1). */
  maxAttempts: number;
  /** How long one attempt may run before it counts as failed (seconds); 0 = no deadline. */
  timeoutSeconds: number;
  /** An attempt with no event (progress counts) for this long is over: `heartbeat-missed`. Absent: none. */
  heartbeatSeconds?: number;
}

export interface Protocol {
  requestType: string;
  version: number;
  description: string;
  steps: ProtocolStep[];
  /**
   * The compensation step, dispatched once when the job fails (not on cancel). A job keeps it as
   * its last step (index = steps.length), pending until then.
   */
  onFailure?: ProtocolStep;
}

/** What an entry of a job's history records: the cause of one stored change. */
export type HistoryAction = "accepted" | "event" | "deadline" | "redrive" | "pause" | "resume" | "cancel";

/**
 * One stored change of a job, written with it (domain/history.ts): its cause, who caused it, and
 * what it did to the job's steps and status. Map children's own changes are not entries (their
 * map step's start and end are); progress reports are not either (the step keeps the latest).
 */
export interface HistoryEntry {
  jobId: string;
  /** 1, 2, …: the job's `changes` after this one. */
  seq: number;
  at: string;
  action: HistoryAction;
  /** The caller's key name or token subject; "service" for what the orchestrator did by itself. */
  actor: string;
  /** The step the cause is about (an event's, a deadline's), by name. */
  step?: string;
  /** An event's id and reported status. */
  eventId?: string;
  status?: string;
  /** What the cause said, in a few words: an error's code, a redrive's patch and skips. */
  detail?: JsonObject;
  /** Directives issued by this change: one per step (re)dispatched. */
  dispatched: { step: string; messageId: string; attempt: number }[];
  /** Steps whose status this change moved (the cause's own step included). */
  steps: { step: string; status: StepStatus }[];
  /** The job's status after the change, when it moved. */
  jobStatus?: JobStatus;
}

export const WEBHOOK_EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "step.succeeded", "step.failed"] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];

/** A command's `callback`: the client's URL and the events it wants (default: the job's end). */
export interface JobCallback {
  url: string;
  events: WebhookEventType[];
}

/** What one webhook delivery posts (Standard Webhooks: `{ type, timestamp, data }`), and where. */
export interface WebhookDelivery {
  url: string;
  type: WebhookEventType;
  body: { type: WebhookEventType; timestamp: string; data: JsonObject };
}
