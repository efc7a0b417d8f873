/**
 * Directives: the outbox entry that dispatches one attempt of a step (or of a map step's child),
 * with what its message carries, and the bounds on that message.
 */
import { ValidationFailedError } from "./errors.ts";
import { directiveIdFor } from "./ids.ts";
import { resolvePointer } from "./json-pointer.ts";
import type { Job, JobFailure, JsonObject, OutboxEntry, PartitionKeyRule, Step } from "./model.ts";

/** The partition key a step's message gets; undefined when the payload lacks the pointed value. */
export function partitionKeyFor(rule: PartitionKeyRule, jobId: string, tenantId: string, payload: JsonObject): string | undefined {
  switch (rule.kind) {
    case "jobId":
      return jobId;
    case "tenantId":
      return tenantId;
    case "pointer": {
      const value = resolvePointer(payload, rule.pointer);
      return typeof value === "string" || typeof value === "number" ? String(value) : undefined;
    }
  }
}

export interface DirectiveOptions {
  job: Job;
  step: Step;
  rule: PartitionKeyRule;
  traceparent: string | null;
  /** The results of the step's predecessors, direct and indirect, by step name. */
  results?: Record<string, JsonObject>;
  /** For the compensation step: why the job failed. */
  failure?: JobFailure;
  /** How long the attempt may run (the step's timeoutSeconds); 0 = no deadline. */
  timeoutSeconds: number;
  /** The step's heartbeat interval (seconds), if it has one. */
  heartbeatSeconds?: number | undefined;
  now: Date;
  retryDelaySeconds: number;
}

/** A step (or a map step's child) that no directive has dispatched yet. */
export function pendingStep(fields: Pick<Step, "jobId" | "stepId" | "index" | "name" | "topic">, now: string): Step {
  return {
    ...fields,
    status: "pending",
    attempts: 0,
    result: null,
    error: null,
    events: [],
    progress: null,
    deadlineAt: null,
    startedAt: null,
    finishedAt: null,
    updatedAt: now,
  };
}

/**
 * An attempt's deadlines starting at `from`: without a heartbeat, its timeout's end; with one,
 * `deadlineAt` is the earlier of that end (kept as `attemptDeadlineAt`) and the first heartbeat due.
 */
export function withDeadlines(step: Step, from: Date, timeoutSeconds: number, heartbeatSeconds: number | undefined): Step {
  const attempt = deadlineFrom(from, timeoutSeconds);
  if (!heartbeatSeconds) {
    const { attemptDeadlineAt: _, ...rest } = step;
    return { ...rest, deadlineAt: attempt };
  }
  return { ...step, attemptDeadlineAt: attempt, deadlineAt: nextBeat(attempt, from, heartbeatSeconds) };
}

/** A step that was heard from at `at`: its next heartbeat is due one interval later (never past the attempt's end). */
export function heardFrom(step: Step, at: Date, heartbeatSeconds: number | undefined): Step {
  if (!heartbeatSeconds || step.deadlineAt === null) return step;
  return { ...step, deadlineAt: nextBeat(step.attemptDeadlineAt ?? null, at, heartbeatSeconds) };
}

function nextBeat(attemptEnd: string | null, from: Date, heartbeatSeconds: number): string {
  const beat = deadlineFrom(from, heartbeatSeconds)!;
  return attemptEnd !== null && attemptEnd < beat ? attemptEnd : beat;
}

/** The deadline of an attempt starting at `from`; null without a timeout. */
export function deadlineFrom(from: Date, timeoutSeconds: number): string | null {
  return timeoutSeconds > 0 ? new Date(from.getTime() + timeoutSeconds * 1000).toISOString() : null;
}

/**
 * Another directive for a step (the next step's first, or a retry): the step counts it and gets
 * the attempt's deadline, and the entry's id says which dispatch it is, so a repeated write is the
 * same entry.
 */
export function issueDirective(options: DirectiveOptions): { step: Step; entry: OutboxEntry } {
  const { job, step } = options;
  const now = options.now.toISOString();
  const partitionKey = partitionKeyFor(options.rule, job.jobId, job.tenantId, job.payload) ?? job.jobId;
  return {
    step: { ...withDeadlines(step, options.now, options.timeoutSeconds, options.heartbeatSeconds), attempts: step.attempts + 1, updatedAt: now },
    entry: {
      outboxId: directiveIdFor(step.stepId, step.attempts),
      jobId: job.jobId,
      stepId: step.stepId,
      stepIndex: step.index,
      topic: step.topic,
      partitionKey,
      traceparent: options.traceparent,
      results: options.results ?? {},
      ...(options.failure ? { failure: options.failure } : {}),
      ...(options.heartbeatSeconds ? { heartbeatSeconds: options.heartbeatSeconds } : {}),
      ...(options.timeoutSeconds > 0 ? { timeoutSeconds: options.timeoutSeconds } : {}),
      status: "pending",
      attempts: 0,
      nextAttemptAt: new Date(options.now.getTime() + options.retryDelaySeconds * 1000).toISOString(),
      lastError: null,
      sentAt: null,
      lease: null,
      createdAt: now,
      updatedAt: now,
    },
  };
}

/**
 * What one step message may carry of payload and earlier results, in UTF-8 bytes: Service Bus
 * Standard takes 256 KB per message, and the rest of the message needs room too.
 */
export const MAX_MESSAGE_DATA_BYTES = 200 * 1024;

/** A result that would make a step's message too large is refused, not stored. */
export function assertMessageFits(job: Job, results: Record<string, JsonObject>, nextStep: string): void {
  const bytes = new TextEncoder().encode(JSON.stringify({ payload: job.payload, results })).byteLength;
  if (bytes <= MAX_MESSAGE_DATA_BYTES) return;
  const reason = `with this result, the message of step '${nextStep}' would carry ${bytes} bytes of payload and results, over the limit of ${MAX_MESSAGE_DATA_BYTES}`;
  throw new ValidationFailedError(reason, { errors: [{ path: "/result", message: "too large to hand on to the next step" }] });
}
