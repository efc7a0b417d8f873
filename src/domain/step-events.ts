/**
 * What a worker's step event does to a job, as one pure function: the
 * entities to write in one change, or why nothing changes.
 */

import { type ApplyOptions, cancelRest, failJob, redispatch } from "./fail-fast.ts";
import { definitionOf, isCompensation, lineOf, resultsFor } from "./graph.ts";
import type { Job, JobAggregate, JsonObject, OutboxEntry, Step, StepError } from "./model.ts";
import { advance } from "./plan-job.ts";
import { failStep, finishJob, hasJobEnded, hasStepEnded, initiateStep, recordStepError, rememberEvent, startJob, succeedStep } from "./transitions.ts";

export type { ApplyOptions } from "./fail-fast.ts";
export { cancelRest } from "./fail-fast.ts";

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

export function applyStepEvent(aggregate: JobAggregate, stepId: string, event: StepEvent, options: ApplyOptions): EventOutcome {
  const { job } = aggregate;
  const now = options.now.toISOString();
  const found = aggregate.steps.find((s) => s.stepId === stepId);
  if (!found) throw new Error(`step ${stepId} is not part of job ${job.jobId}`);
  if (found.events.includes(event.eventId)) return { outcome: "duplicate" };
  // The compensation step runs after its job failed; every other step's events end with the job.
  const compensating = job.status === "failed" && isCompensation(options.protocol, found);
  if (hasJobEnded(job) && !compensating) return { outcome: "ignored", reason: `job is ${job.status}` };
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
    if (compensating) return { outcome: "applied", steps: [step], outbox: [] };
    const succeeded = step;
    const after = { ...aggregate, job: started, steps: aggregate.steps.map((s) => (s.stepId === succeeded.stepId ? succeeded : s)) };
    const traceparent = aggregate.outbox.find((o) => o.stepId === found.stepId)?.traceparent ?? null;
    const protocol = options.protocol ?? lineOf(aggregate);
    const next = advance(after, { protocol, now: options.now, retryDelaySeconds: options.retryDelaySeconds, traceparent });
    if (next.done) return { outcome: "applied", job: finishJob(started, "succeeded", now), steps: [step, ...next.steps], outbox: [] };
    return { outcome: "applied", ...startedJob, steps: [step, ...next.steps], outbox: next.outbox };
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
  const definition = definitionOf(options.protocol, step.index);
  const maxAttempts = definition?.maxAttempts ?? 1;
  if (error.retryable && step.attempts < maxAttempts) {
    const results = resultsFor(options.protocol, aggregate.steps, step.index);
    const failure = aggregate.outbox.find((o) => o.stepId === step.stepId)?.failure;
    const issued = redispatch(aggregate, recordStepError(step, error, now), results, { ...options, traceFrom: step, ...(failure ? { failure } : {}) });
    return { ...jobChange, steps: [issued.step], outbox: [issued.entry] };
  }
  const failed = failStep(step, error, now);
  // The compensation step failing for good ends nothing more: its job has failed already.
  if (isCompensation(options.protocol, step)) return { steps: [failed], outbox: [] };
  return failJob(aggregate, failed, options);
}

/** Cancels a job that has not ended: its open steps, and the directives not yet sent. */
export function cancelJob(aggregate: JobAggregate, now: Date): { job: Job; steps: Step[]; outbox: OutboxEntry[] } | null {
  if (hasJobEnded(aggregate.job)) return null;
  const at = now.toISOString();
  // A cancel does not run the compensation step: it is cancelled with the rest.
  const rest = cancelRest(aggregate, at, null, undefined);
  return { job: finishJob(aggregate.job, "cancelled", at), ...rest };
}
