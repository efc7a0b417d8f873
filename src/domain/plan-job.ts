import { ValidationFailedError } from "./errors.ts";
import { conditionHolds, isCompensation, isDone, readySteps, resultsFor, workSteps } from "./graph.ts";
import { outboxIdFor, stepIdFor } from "./ids.ts";
import { resolvePointer } from "./json-pointer.ts";
import type { Job, JobAggregate, JobFailure, JsonObject, OutboxEntry, PartitionKeyRule, Protocol, ProtocolStep, Step } from "./model.ts";
import { finishJob, skipStep, startJob } from "./transitions.ts";

export interface PlannedCommand {
  requestType: string;
  tenantId: string;
  correlationId: string | null;
  idempotencyKey: string | null;
  payload: JsonObject;
}

export interface PlanJobOptions {
  jobId: string;
  command: PlannedCommand;
  protocol: Protocol;
  traceparent: string | null;
  now: Date;
  /** A fresh entry is due for the sweeper only this long after creation, so the fast path is not raced. */
  retryDelaySeconds: number;
}

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
  now: Date;
  retryDelaySeconds: number;
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
    step: { ...step, attempts: step.attempts + 1, deadlineAt: deadlineFrom(options.now, options.timeoutSeconds), updatedAt: now },
    entry: {
      outboxId: outboxIdFor(job.jobId, step.index, step.attempts),
      jobId: job.jobId,
      stepId: step.stepId,
      stepIndex: step.index,
      topic: step.topic,
      partitionKey,
      traceparent: options.traceparent,
      results: options.results ?? {},
      ...(options.failure ? { failure: options.failure } : {}),
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

export interface AdvanceOptions {
  protocol: Protocol;
  now: Date;
  retryDelaySeconds: number;
  /** The trace context the new directives carry. */
  traceparent: string | null;
}

/**
 * Moves a job on after a step is done: every step whose predecessors are all done is dispatched
 * (its directive issued) or, when its `when` does not hold, skipped, which may make more steps
 * ready; all of it one change. `done`: every step but the compensation step is done (the
 * compensation step is then skipped too).
 */
export function advance(aggregate: JobAggregate, options: AdvanceOptions): { steps: Step[]; outbox: OutboxEntry[]; done: boolean } {
  const { protocol } = options;
  const now = options.now.toISOString();
  let steps = aggregate.steps;
  const changed = new Map<string, Step>();
  const outbox: OutboxEntry[] = [];
  const replace = (next: Step) => {
    steps = steps.map((s) => (s.stepId === next.stepId ? next : s));
    changed.set(next.stepId, next);
  };
  for (let ready = readySteps(protocol, { steps }); ready.length > 0; ready = readySteps(protocol, { steps })) {
    for (const step of ready) {
      const definition = protocol.steps[step.index]!;
      const results = resultsFor(protocol, steps, step.index);
      if (definition.when && !conditionHolds(definition.when, { payload: aggregate.job.payload, results })) {
        replace(skipStep(step, now));
        continue;
      }
      // Results are what a step hands on; a payload alone was bounded at the intake.
      if (Object.keys(results).length > 0) assertMessageFits(aggregate.job, results, step.name);
      const issued = issueDirective({
        job: aggregate.job,
        step,
        results,
        rule: definition.partitionKey,
        timeoutSeconds: definition.timeoutSeconds,
        traceparent: options.traceparent,
        now: options.now,
        retryDelaySeconds: options.retryDelaySeconds,
      });
      replace(issued.step);
      outbox.push(issued.entry);
    }
  }
  const done = workSteps(protocol, steps).every(isDone);
  if (done) {
    for (const step of steps) if (isCompensation(protocol, step) && step.status === "pending") replace(skipStep(step, now));
  }
  return { steps: [...changed.values()], outbox, done };
}

/**
 * Builds a new job, all its steps (the compensation step last), and the directives of the steps
 * that start with it (or their skips). Pure.
 */
export function planJob(options: PlanJobOptions): JobAggregate {
  const { jobId, command, protocol } = options;
  const now = options.now.toISOString();
  const job: Job = {
    jobId,
    tenantId: command.tenantId,
    requestType: command.requestType,
    protocolVersion: protocol.version,
    correlationId: command.correlationId,
    idempotencyKey: command.idempotencyKey,
    payload: command.payload,
    status: "accepted",
    createdAt: now,
    updatedAt: now,
  };
  if (protocol.steps.length === 0) throw new Error(`protocol ${protocol.requestType} has no steps`);
  const definitions: ProtocolStep[] = protocol.onFailure ? [...protocol.steps, protocol.onFailure] : protocol.steps;
  const steps: Step[] = definitions.map((definition, index) => ({
    jobId,
    stepId: stepIdFor(jobId, index),
    index,
    name: definition.name,
    topic: definition.topic,
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
  }));
  const started = advance(
    { job, steps, outbox: [] },
    { protocol, now: options.now, retryDelaySeconds: options.retryDelaySeconds, traceparent: options.traceparent },
  );
  for (const entry of started.outbox) {
    const rule = protocol.steps[entry.stepIndex]!.partitionKey;
    if (partitionKeyFor(rule, jobId, command.tenantId, command.payload) === undefined) {
      throw new Error(`payload has no partition key for step ${protocol.steps[entry.stepIndex]!.name}`);
    }
  }
  const planned = steps.map((step) => started.steps.find((s) => s.stepId === step.stepId) ?? step);
  // Every step skipped at once: the job is done before it started.
  const finished = started.done ? finishJob(startJob(job, now), "succeeded", now) : job;
  return { job: finished, steps: planned, outbox: started.outbox };
}
