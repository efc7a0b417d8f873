/**
 * The API's shapes, as the client hands them out. What the service's OpenAPI document describes
 * is taken from the generated `openapi.ts` (the accepted answer, the problem, the listing's query
 * and its job statuses); the rest is written here from docs/API.md, because the document gives
 * those answers as prose only. test/packages/client-types.test.ts holds these to the service's
 * own types.
 */
import type { components, operations } from "./openapi.ts";

/** RFC 9457 problem details, as every error answer carries them. */
export type Problem = components["schemas"]["Problem"];
/** One violation of an input problem: a JSON pointer into the request and what is wrong there. */
export type ProblemViolation = NonNullable<Problem["errors"]>[number];

/** `202` of `POST /v1/commands`. */
export type Accepted = operations["postV1Commands"]["responses"][202]["content"]["application/json"];

/** The query of `GET /v1/jobs`, as the service reads it (every value a string). */
export type ListJobsQuery = operations["getV1Jobs"]["parameters"]["query"];

export type JobStatus = NonNullable<ListJobsQuery["status"]>;
export type StepStatus = "pending" | "initiated" | "succeeded" | "failed" | "skipped" | "cancelled";
export type OutboxStatus = "pending" | "sent" | "failed" | "withdrawn";
export type WebhookEvent = "job.succeeded" | "job.failed" | "job.cancelled" | "step.succeeded" | "step.failed";

export type JsonObject = { [key: string]: unknown };

/** A command: the body of `POST /v1/commands` (its idempotency key travels as a header). */
export interface Command<Payload extends JsonObject = JsonObject> {
  /** Names the protocol to run, e.g. `document.ingest`. */
  requestType: string;
  tenantId: string;
  correlationId?: string;
  /** Must satisfy the payload schema of every step of the protocol. */
  payload: Payload;
  /** Where the job's changes are posted as signed webhooks (default events: the job's end). */
  callback?: { url: string; events?: WebhookEvent[] };
}

/** What `submit` resolves to: the accepted answer, whether it was a replay, and the key used. */
export interface Submitted extends Accepted {
  /** True when the service answered with the job of an earlier request with this key. */
  replayed: boolean;
  idempotencyKey: string;
}

export interface StepError {
  code: string;
  message: string;
  retryable: boolean;
}

export interface StepProgress {
  percent: number | null;
  message: string | null;
  at: string;
}

export interface JobStep {
  stepId: string;
  index: number;
  name: string;
  topic: string;
  status: StepStatus;
  /** The names of the steps it waits for. */
  after: string[];
  /** The protocol's `onFailure` step: it runs only when the job fails. */
  compensation: boolean;
  attempts: number;
  result: JsonObject | null;
  error: StepError | null;
  startedAt: string | null;
  finishedAt: string | null;
  progress: StepProgress | null;
  deadlineAt: string | null;
  updatedAt: string;
  /** A map step's children by state. */
  map?: { total: number; pending: number; running: number; succeeded: number; failed: number };
}

export interface JobOutboxEntry {
  outboxId: string;
  stepId: string;
  topic: string;
  partitionKey: string;
  status: OutboxStatus;
  attempts: number;
  nextAttemptAt: string | null;
  lastError: string | null;
  sentAt: string | null;
}

/** `GET /v1/jobs/{jobId}`: the job with its steps and outbox entries. */
export interface Job {
  jobId: string;
  tenantId: string;
  requestType: string;
  correlationId: string | null;
  status: JobStatus;
  paused: boolean;
  redrives: number;
  /** The sequence number of its latest change. */
  seq: number;
  createdAt: string;
  updatedAt: string;
  steps: JobStep[];
  outbox: JobOutboxEntry[];
}

/** One row of `GET /v1/jobs`. */
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

export interface Page<T> {
  items: T[];
  /** The next page's cursor; null on the last page. */
  nextCursor: string | null;
}

export type JobPage = Page<JobSummary>;

export type HistoryAction = "accepted" | "event" | "deadline" | "redrive" | "pause" | "resume" | "cancel";

/** One stored change of a job (`GET /v1/jobs/{jobId}/history`). */
export interface HistoryEntry {
  jobId: string;
  seq: number;
  at: string;
  action: HistoryAction;
  /** The caller's key name or token subject; `service` or `service-bus` for the service's own. */
  actor: string;
  step?: string;
  eventId?: string;
  status?: string;
  detail?: JsonObject;
  dispatched: { step: string; messageId: string; attempt: number }[];
  steps: { step: string; status: StepStatus }[];
  jobStatus?: JobStatus;
}

/** What redrive, pause and resume answer. */
export interface RepairResult {
  jobId: string;
  status: JobStatus;
  paused: boolean;
  redrives: number;
}

/** What cancel answers. */
export interface Cancelled {
  jobId: string;
  status: "cancelled";
}

/** A redrive's options: a JSON Merge Patch of the payload, steps to mark succeeded with a result. */
export interface RedriveOptions {
  patch?: JsonObject;
  steps?: Record<string, { skip: { result: JsonObject } }>;
  signal?: AbortSignal;
}
