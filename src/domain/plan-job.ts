import { outboxIdFor, stepIdFor } from "./ids.ts";
import { resolvePointer } from "./json-pointer.ts";
import type { Job, JobAggregate, JsonObject, OutboxEntry, PartitionKeyRule, Protocol, Step } from "./model.ts";

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
  /** The results of the steps before this one, by step name (none for the first step). */
  results?: Record<string, JsonObject>;
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

/** Builds a new job, all its steps, and the directive of its first step. Pure. */
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
  const steps: Step[] = protocol.steps.map((definition, index) => ({
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
  const first = steps[0];
  const firstDefinition = protocol.steps[0];
  if (!first || !firstDefinition) throw new Error(`protocol ${protocol.requestType} has no steps`);
  if (partitionKeyFor(firstDefinition.partitionKey, jobId, command.tenantId, command.payload) === undefined) {
    throw new Error(`payload has no partition key for step ${first.name}`);
  }
  const issued = issueDirective({
    job,
    step: first,
    rule: firstDefinition.partitionKey,
    timeoutSeconds: firstDefinition.timeoutSeconds,
    traceparent: options.traceparent,
    now: options.now,
    retryDelaySeconds: options.retryDelaySeconds,
  });
  steps[0] = issued.step;
  return { job, steps, outbox: [issued.entry] };
}
