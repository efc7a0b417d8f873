/**
 * What a worker's step event does to a job, as one pure function: the
 * entities to write in one change, or why nothing changes.
 */

import { ValidationFailedError } from "./errors.ts";
import type { Job, JobAggregate, JsonObject, OutboxEntry, Protocol, Step, StepError } from "./model.ts";
import { issueDirective } from "./plan-job.ts";
import {
  cancelStep,
  failStep,
  finishJob,
  hasJobEnded,
  hasStepEnded,
  initiateStep,
  recordStepError,
  rememberEvent,
  startJob,
  succeedStep,
  withdrawEntry,
} from "./transitions.ts";

export interface StepEvent {
  eventId: string;
  status: "succeeded" | "failed" | "progress";
  result?: JsonObject;
  error?: { code: string; message: string; retryable?: boolean };
  /** With `progress`: how far (0–100) and a short note. */
  percent?: number;
  message?: string;
  /** The attempt the worker works on (the message's `attempt`): an event of an earlier one is ignored. */
  attempt?: number;
}

export type EventOutcome =
  | { outcome: "applied"; job?: Job; steps: Step[]; outbox: OutboxEntry[] }
  /** The same eventId was applied before. */
  | { outcome: "duplicate" }
  /** The step or its job had already ended: a late event. */
  | { outcome: "ignored"; reason: string };

export interface ApplyOptions {
  protocol: Protocol | undefined;
  now: Date;
  retryDelaySeconds: number;
}

export function applyStepEvent(aggregate: JobAggregate, stepId: string, event: StepEvent, options: ApplyOptions): EventOutcome {
  const { job } = aggregate;
  const now = options.now.toISOString();
  const found = aggregate.steps.find((s) => s.stepId === stepId);
  if (!found) throw new Error(`step ${stepId} is not part of job ${job.jobId}`);
  if (found.events.includes(event.eventId)) return { outcome: "duplicate" };
  if (hasJobEnded(job)) return { outcome: "ignored", reason: `job is ${job.status}` };
  if (hasStepEnded(found)) return { outcome: "ignored", reason: `step is ${found.status}` };
  if (event.attempt !== undefined && event.attempt !== found.attempts) {
    return { outcome: "ignored", reason: `attempt ${event.attempt} is not the step's current attempt (${found.attempts})` };
  }

  let step = rememberEvent(found, event.eventId, now);
  if (event.status === "progress") {
    const progress = { percent: event.percent ?? null, message: event.message ?? null, at: now };
    return { outcome: "applied", steps: [{ ...step, progress }], outbox: [] };
  }

  // A worker can answer before the fast path marked its directive sent: the step started.
  if (step.status === "pending") {
    if (step.attempts === 0) return { outcome: "ignored", reason: "step has not been dispatched" };
    step = initiateStep(step, now);
  }
  // A step that answers has started, and so has its job, whether or not a publish was marked
  // first (without a broker, none ever is).
  const started = job.status === "accepted" ? startJob(job, now) : job;
  const startedJob = started !== job ? { job: started } : {};

  if (event.status === "succeeded") {
    step = succeedStep(step, event.result ?? null, now);
    const next = aggregate.steps.find((s) => s.index === step.index + 1);
    if (!next) return { outcome: "applied", job: finishJob(started, "succeeded", now), steps: [step], outbox: [] };
    const succeeded = step;
    const results = resultsBefore(
      aggregate.steps.map((s) => (s.stepId === succeeded.stepId ? succeeded : s)),
      next.index,
    );
    assertMessageFits(job, results, next.name);
    const issued = redispatch(aggregate, next, results, { ...options, traceFrom: found });
    return { outcome: "applied", ...startedJob, steps: [step, issued.step], outbox: [issued.entry] };
  }

  const error: StepError = { code: event.error?.code ?? "unknown", message: event.error?.message ?? "", retryable: event.error?.retryable ?? false };
  return { outcome: "applied", ...endAttempt({ ...aggregate, job: started }, step, error, options, startedJob) };
}

/**
 * A failed attempt (a worker's `failed` event, or a deadline that passed): another directive
 * while the error is retryable and attempts are left, else the step and the job fail and what
 * never ran is cancelled. `aggregate.job` is the job as it stands after the attempt started.
 */
export function endAttempt(
  aggregate: JobAggregate,
  step: Step,
  error: StepError,
  options: ApplyOptions,
  jobChange: { job?: Job } = {},
): { job?: Job; steps: Step[]; outbox: OutboxEntry[] } {
  const now = options.now.toISOString();
  const maxAttempts = options.protocol?.steps[step.index]?.maxAttempts ?? 1;
  if (error.retryable && step.attempts < maxAttempts) {
    const issued = redispatch(aggregate, recordStepError(step, error, now), resultsBefore(aggregate.steps, step.index), { ...options, traceFrom: step });
    return { ...jobChange, steps: [issued.step], outbox: [issued.entry] };
  }
  const failed = failStep(step, error, now);
  const rest = cancelRest(aggregate, now, failed.stepId);
  return { job: finishJob(aggregate.job, "failed", now), steps: [failed, ...rest.steps], outbox: rest.outbox };
}

/** The next directive of `step` under its protocol definition, traced like the step that led to it. */
function redispatch(aggregate: JobAggregate, step: Step, results: Record<string, JsonObject>, options: ApplyOptions & { traceFrom: Step }) {
  const definition = options.protocol?.steps[step.index];
  return issueDirective({
    job: aggregate.job,
    step,
    results,
    rule: definition?.partitionKey ?? { kind: "jobId" },
    timeoutSeconds: definition?.timeoutSeconds ?? 0,
    traceparent: aggregate.outbox.find((o) => o.stepId === options.traceFrom.stepId)?.traceparent ?? null,
    now: options.now,
    retryDelaySeconds: options.retryDelaySeconds,
  });
}

/**
 * What one step message may carry of payload and earlier results, in UTF-8 bytes: Service Bus
 * Standard takes 256 KB per message, and the rest of the message needs room too.
 */
export const MAX_MESSAGE_DATA_BYTES = 200 * 1024;

/** The results of the steps before `index` that succeeded, by step name. */
function resultsBefore(steps: readonly Step[], index: number): Record<string, JsonObject> {
  const results: Record<string, JsonObject> = {};
  for (const step of steps) if (step.index < index && step.status === "succeeded" && step.result) results[step.name] = step.result;
  return results;
}

/** A result that would make the next step's message too large is refused, not stored. */
function assertMessageFits(job: Job, results: Record<string, JsonObject>, nextStep: string): void {
  const bytes = new TextEncoder().encode(JSON.stringify({ payload: job.payload, results })).byteLength;
  if (bytes <= MAX_MESSAGE_DATA_BYTES) return;
  const reason = `with this result, the message of step '${nextStep}' would carry ${bytes} bytes of payload and results, over the limit of ${MAX_MESSAGE_DATA_BYTES}`;
  throw new ValidationFailedError(reason, { errors: [{ path: "/result", message: "too large to hand on to the next step" }] });
}

/** Cancels a job that has not ended: its open steps, and the directives not yet sent. */
export function cancelJob(aggregate: JobAggregate, now: Date): { job: Job; steps: Step[]; outbox: OutboxEntry[] } | null {
  if (hasJobEnded(aggregate.job)) return null;
  const at = now.toISOString();
  const rest = cancelRest(aggregate, at, null);
  return { job: finishJob(aggregate.job, "cancelled", at), ...rest };
}

export function cancelRest(aggregate: JobAggregate, now: string, except: string | null) {
  return {
    steps: aggregate.steps.filter((s) => s.stepId !== except && (s.status === "pending" || s.status === "initiated")).map((s) => cancelStep(s, now)),
    outbox: aggregate.outbox.filter((o) => o.status === "pending").map((o) => withdrawEntry(o, "job ended before this directive was sent", now)),
  };
}
