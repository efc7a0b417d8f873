/**
 * What a worker's step event does to a job, as one pure function: the
 * entities to write in one change, or why nothing changes.
 */

import { heardFrom } from "./directives.ts";
import { type ApplyOptions, cancelRest, failJob, redispatch } from "./fail-fast.ts";
import { definitionOf, isCompensation, lineOf, resultsFor } from "./graph.ts";
import { directiveIdFor } from "./ids.ts";
import {
  allEnded,
  CHILDREN_PER_CHANGE,
  childDirective,
  childEnded,
  createChildren,
  endedUncounted,
  isCovered,
  itemsOf,
  type MapContext,
  mapResult,
  tooManyFailed,
} from "./map-step.ts";
import type { Job, JobAggregate, JsonObject, MapDefinition, OutboxEntry, Protocol, ProtocolStep, Step, StepError } from "./model.ts";
import { advance } from "./plan-job.ts";
import {
  failStep,
  finishJob,
  hasJobEnded,
  hasStepEnded,
  initiateStep,
  markOutboxSent,
  recordStepError,
  rememberEvent,
  startJob,
  succeedStep,
} from "./transitions.ts";

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
    // A worker that reports is alive: its next heartbeat is due one interval from now.
    const beaten = heardFrom(step, options.now, definitionOf(options.protocol, step.index)?.heartbeatSeconds);
    return { outcome: "applied", steps: [{ ...beaten, progress }], outbox: [] };
  }

  // A worker can answer before the fast path marked its directive sent: the step started, and
  // its directive was delivered (marked so here, the fast path's own write is then spared).
  let delivered: OutboxEntry | null = null;
  if (step.status === "pending") {
    if (step.attempts === 0) return { outcome: "ignored", reason: "step has not been dispatched" };
    step = initiateStep(step, now);
    // The directive of the attempt that answered (an earlier one may still be pending beside it).
    const current = directiveIdFor(found.stepId, step.attempts - 1);
    delivered = aggregate.outbox.find((o) => o.outboxId === current && o.status === "pending") ?? null;
  }
  // A step that answers has started, and so has its job, whether or not a publish was marked
  // first (without a broker, none ever is).
  const started = job.status === "accepted" ? startJob(job, now) : job;
  const startedJob = started !== job ? { job: started } : {};

  if (event.status === "succeeded") {
    step = succeedStep(step, event.result ?? null, now);
    if (compensating) return { outcome: "applied", ...withDelivered({ steps: [step], outbox: [] }, delivered, now) };
    const succeeded = step;
    const after = { ...aggregate, job: started, steps: aggregate.steps.map((s) => (s.stepId === succeeded.stepId ? succeeded : s)) };
    const traceparent = aggregate.outbox.find((o) => o.stepId === found.stepId)?.traceparent ?? null;
    const protocol = options.protocol ?? lineOf(aggregate);
    return { outcome: "applied", ...withDelivered(moveOn(after, [step], { ...options, protocol }, traceparent, startedJob), delivered, now) };
  }

  const error: StepError = { code: event.error?.code ?? "unknown", message: event.error?.message ?? "", retryable: event.error?.retryable ?? false };
  return { outcome: "applied", ...withDelivered(endAttempt({ ...aggregate, job: started }, step, error, options, startedJob), delivered, now) };
}

/**
 * The change, with the directive its worker answered marked sent: it was delivered, whatever the
 * change would have done with it as a pending entry (a job failing withdraws its pending ones).
 */
function withDelivered<T extends { outbox: OutboxEntry[] }>(change: T, delivered: OutboxEntry | null, now: string): T {
  if (!delivered) return change;
  return { ...change, outbox: [...change.outbox.filter((o) => o.outboxId !== delivered.outboxId), markOutboxSent(delivered, now)] };
}

/**
 * After steps are done (`done`, already in `aggregate`): the steps that became ready are
 * dispatched, a job whose every step is done succeeds, and a map that cannot start fails it.
 */
function moveOn(
  aggregate: JobAggregate,
  done: Step[],
  options: ApplyOptions & { protocol: Protocol },
  traceparent: string | null,
  jobChange: { job?: Job },
): { job?: Job; steps: Step[]; outbox: OutboxEntry[] } {
  const now = options.now.toISOString();
  const next = advance(aggregate, { protocol: options.protocol, now: options.now, retryDelaySeconds: options.retryDelaySeconds, traceparent });
  if (next.failed) {
    const failed = failJob(aggregate, next.failed, options);
    return { job: failed.job, steps: [...done, ...failed.steps], outbox: failed.outbox };
  }
  if (next.done) return { job: finishJob(aggregate.job, "succeeded", now), steps: [...done, ...next.steps], outbox: [] };
  return { ...jobChange, steps: [...done, ...next.steps], outbox: next.outbox };
}

/**
 * What a worker's event on a map step's child does: the child's change, the map step's counts,
 * and either the next children (as many as end), or — once every child ended — the map step's
 * end and what follows it. The map step fails as soon as more children failed than it
 * tolerates. `children`: every child of the map, needed only when the last one ends (the answer
 * is "needs-children" without them), so that an event reads a bounded number of rows.
 */
export function applyChildEvent(
  aggregate: JobAggregate,
  child: Step,
  childOutbox: readonly OutboxEntry[],
  event: StepEvent,
  options: ApplyOptions,
  children?: readonly Step[],
): EventOutcome | { outcome: "needs-children" } {
  const { job } = aggregate;
  const now = options.now.toISOString();
  // A repeat of the event that ended the child, which its map did not count yet: count it now.
  const folded = foldEndedChild(aggregate, child, childOutbox, options, children);
  if (folded) return folded;
  if (child.events.includes(event.eventId)) return { outcome: "duplicate" };
  if (hasJobEnded(job)) return { outcome: "ignored", reason: `job is ${job.status}` };
  const parent = aggregate.steps.find((s) => s.index === child.index);
  const definition = definitionOf(options.protocol, child.index);
  if (!parent?.map) return { outcome: "ignored", reason: "it belongs to no map step" };
  if (!definition?.map || !options.protocol) {
    if (hasStepEnded(parent)) return { outcome: "ignored", reason: `map step is ${parent.status}` };
    // The protocol no longer maps this step: its children cannot be counted against it, so the
    // job ends (failed, for an operator to see) instead of waiting for ever.
    return { outcome: "applied", ...mapGone(aggregate, parent, options) };
  }
  if (hasStepEnded(parent)) return { outcome: "ignored", reason: `map step is ${parent.status}` };
  if (hasStepEnded(child)) return { outcome: "ignored", reason: `step is ${child.status}` };
  if (child.itemIndex !== undefined && !isCovered(parent.map, child.itemIndex)) return { outcome: "ignored", reason: "step has not been dispatched" };
  if (event.attempt !== undefined && event.attempt !== child.attempts) {
    return { outcome: "ignored", reason: `attempt ${event.attempt} is not the step's current attempt (${child.attempts})` };
  }
  let step = rememberEvent(child, event.eventId, now);
  if (event.status === "progress") {
    const beaten = heardFrom(step, options.now, definition.heartbeatSeconds);
    return { outcome: "applied", steps: [{ ...beaten, progress: { percent: event.percent ?? null, message: event.message ?? null, at: now } }], outbox: [] };
  }
  if (step.status === "pending") {
    if (step.attempts === 0) return { outcome: "ignored", reason: "step has not been dispatched" };
    step = initiateStep(step, now);
  }
  const started = job.status === "accepted" ? startJob(job, now) : job;
  const startedJob = started !== job ? { job: started } : {};
  const map = { ...definition, map: definition.map };
  const results = resultsFor(options.protocol, aggregate.steps, parent.index);
  const context = { job: started, results, traceparent: childOutbox[0]?.traceparent ?? null, now: options.now, retryDelaySeconds: options.retryDelaySeconds };
  if (event.status === "succeeded") step = succeedStep(step, event.result ?? null, now);
  else {
    const error: StepError = { code: event.error?.code ?? "unknown", message: event.error?.message ?? "", retryable: event.error?.retryable ?? false };
    const retried = retryChild(started, step, error, map, context);
    if (retried) return { outcome: "applied", ...startedJob, steps: [retried.step], outbox: [retried.entry] };
    step = failStep(step, error, now);
  }
  const done = childDone({ ...aggregate, job: started }, parent, step, map, options, context, startedJob, children);
  return "outcome" in done ? done : { outcome: "applied", ...done };
}

/**
 * A child that ended without its map counting it (on `table`, its row was written and its map's
 * was not: a lost race, or a crash between the two): the map's counts and what follows from
 * them, as if the child had just ended; the child's row stays as it is. Null for any other child.
 */
export function foldEndedChild(
  aggregate: JobAggregate,
  child: Step,
  childOutbox: readonly OutboxEntry[],
  options: ApplyOptions,
  children?: readonly Step[],
): EventOutcome | { outcome: "needs-children" } | null {
  const parent = aggregate.steps.find((s) => s.index === child.index);
  const definition = definitionOf(options.protocol, child.index);
  if (!parent || !definition?.map || !options.protocol || hasJobEnded(aggregate.job) || !endedUncounted(parent, child)) return null;
  const context = {
    job: aggregate.job,
    results: resultsFor(options.protocol, aggregate.steps, parent.index),
    traceparent: childOutbox[0]?.traceparent ?? null,
    now: options.now,
    retryDelaySeconds: options.retryDelaySeconds,
  };
  const done = childDone(aggregate, parent, child, { ...definition, map: definition.map }, options, context, {}, children);
  return "outcome" in done ? done : { outcome: "applied", ...done };
}

/** A map step whose protocol no longer maps it: the step and its job fail. */
export function mapGone(aggregate: JobAggregate, parent: Step, options: ApplyOptions) {
  const error: StepError = {
    code: "protocol-changed",
    message: `step '${parent.name}' is no longer a map step of ${aggregate.job.requestType}`,
    retryable: false,
  };
  return failJob(aggregate, failStep(parent, error, options.now.toISOString()), options);
}

/** Another directive for a child that failed retryably with attempts left; null otherwise. */
export function retryChild(job: Job, child: Step, error: StepError, definition: ProtocolStep, context: MapContext) {
  if (!error.retryable || child.attempts >= definition.maxAttempts) return null;
  return childDirective(recordStepError(child, error, context.now.toISOString()), definition, { ...context, job });
}

/** A child ended (succeeded, or failed for good): the map step's counts, and what follows from them. */
export function childDone(
  aggregate: JobAggregate,
  parent: Step,
  child: Step,
  definition: ProtocolStep & { map: MapDefinition },
  options: ApplyOptions,
  context: MapContext,
  jobChange: { job?: Job },
  children: readonly Step[] | undefined,
): { job?: Job; steps: Step[]; outbox: OutboxEntry[] } | { outcome: "needs-children" } {
  const now = options.now.toISOString();
  const protocol = options.protocol!;
  let counted = childEnded(parent, child);
  if (tooManyFailed(counted, definition.map)) {
    const error: StepError = {
      code: "map-items-failed",
      message: `${counted.map!.failed} of ${counted.map!.total} items failed, over the ${definition.map.toleratedFailurePercent}% tolerated`,
      retryable: false,
    };
    const failed = failJob(aggregate, failStep(counted, error, now), options);
    return { job: failed.job, steps: [child, ...failed.steps], outbox: failed.outbox };
  }
  if (allEnded(counted)) {
    if (!children) return { outcome: "needs-children" };
    const all = children.map((c) => (c.stepId === child.stepId ? child : c));
    counted = succeedStep(counted, mapResult(counted, all, aggregate.job.jobId), now);
    const after = { ...aggregate, steps: aggregate.steps.map((s) => (s.stepId === counted.stepId ? counted : s)) };
    return moveOn(after, [child, counted], { ...options, protocol }, context.traceparent, jobChange);
  }
  const items = itemsOf(definition.map, aggregate.job, context.results);
  const more = Array.isArray(items) ? createChildren(counted, definition, items, CHILDREN_PER_CHANGE, context) : { step: counted, children: [], outbox: [] };
  return { ...jobChange, steps: [child, more.step, ...more.children], outbox: more.outbox };
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
  const rest = cancelRest(aggregate, at, null, null);
  return { job: finishJob(aggregate.job, "cancelled", at), ...rest };
}
