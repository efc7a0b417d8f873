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
  const definitions = options.protocol?.steps ?? [];

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
    const issued = issueDirective({
      job,
      step: next,
      results,
      rule: definitions[next.index]?.partitionKey ?? { kind: "jobId" },
      traceparent: aggregate.outbox.find((o) => o.stepId === found.stepId)?.traceparent ?? null,
      now: options.now,
      retryDelaySeconds: options.retryDelaySeconds,
    });
    return { outcome: "applied", ...startedJob, steps: [step, issued.step], outbox: [issued.entry] };
  }

  const error: StepError = { code: event.error?.code ?? "unknown", message: event.error?.message ?? "", retryable: event.error?.retryable ?? false };
  const maxAttempts = definitions[step.index]?.maxAttempts ?? 1;
  if (error.retryable && step.attempts < maxAttempts) {
    const issued = issueDirective({
      job,
      step: recordStepError(step, error, now),
      results: resultsBefore(aggregate.steps, step.index),
      rule: definitions[step.index]?.partitionKey ?? { kind: "jobId" },
      traceparent: aggregate.outbox.find((o) => o.stepId === found.stepId)?.traceparent ?? null,
      now: options.now,
      retryDelaySeconds: options.retryDelaySeconds,
    });
    return { outcome: "applied", ...startedJob, steps: [issued.step], outbox: [issued.entry] };
  }
  step = failStep(step, error, now);
  const rest = cancelRest(aggregate, now, step.stepId);
  return { outcome: "applied", job: finishJob(started, "failed", now), steps: [step, ...rest.steps], outbox: rest.outbox };
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

function cancelRest(aggregate: JobAggregate, now: string, except: string | null) {
  return {
    steps: aggregate.steps.filter((s) => s.stepId !== except && (s.status === "pending" || s.status === "initiated")).map((s) => cancelStep(s, now)),
    outbox: aggregate.outbox.filter((o) => o.status === "pending").map((o) => withdrawEntry(o, "job ended before this directive was sent", now)),
  };
}
