import { assertMessageFits, issueDirective, partitionKeyFor, pendingStep } from "./directives.ts";
import { failJob } from "./fail-fast.ts";
import { conditionHolds, isCompensation, isDone, readySteps, resultsFor, workSteps } from "./graph.ts";
import { isChildStepId, stepIdFor } from "./ids.ts";
import { FIRST_CHILDREN, startMap } from "./map-step.ts";
import type { Job, JobAggregate, JobCallback, JsonObject, OutboxEntry, Protocol, ProtocolStep, Step } from "./model.ts";
import { finishJob, skipStep, startJob } from "./transitions.ts";

export { assertMessageFits, type DirectiveOptions, deadlineFrom, issueDirective, MAX_MESSAGE_DATA_BYTES, partitionKeyFor } from "./directives.ts";

export interface PlannedCommand {
  requestType: string;
  tenantId: string;
  correlationId: string | null;
  idempotencyKey: string | null;
  payload: JsonObject;
  /** Where the job's changes are posted (webhooks), already checked. */
  callback?: JobCallback;
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
export function advance(aggregate: JobAggregate, options: AdvanceOptions): { steps: Step[]; outbox: OutboxEntry[]; done: boolean; failed?: Step } {
  const { protocol } = options;
  const now = options.now.toISOString();
  let steps = aggregate.steps;
  const changed = new Map<string, Step>();
  const outbox: OutboxEntry[] = [];
  /** Map steps' first children: saved with the change, never part of the job's steps. */
  const children: Step[] = [];
  const replace = (next: Step) => {
    steps = steps.map((s) => (s.stepId === next.stepId ? next : s));
    changed.set(next.stepId, next);
  };
  const directed = () => ({ steps, outbox: [...aggregate.outbox, ...outbox] });
  // A paused job dispatches nothing new: what becomes ready waits for its resume.
  if (aggregate.job.paused && !workSteps(protocol, steps).every(isDone)) return { steps: [], outbox: [], done: false };
  for (let ready = readySteps(protocol, directed()); ready.length > 0; ready = readySteps(protocol, directed())) {
    for (const step of ready) {
      const definition = protocol.steps[step.index]!;
      const results = resultsFor(protocol, steps, step.index);
      if (definition.when && !conditionHolds(definition.when, { payload: aggregate.job.payload, results })) {
        replace(skipStep(step, now));
        continue;
      }
      // Results are what a step hands on; a payload alone was bounded at the intake.
      if (Object.keys(results).length > 0) assertMessageFits(aggregate.job, results, step.name);
      if (definition.map) {
        const map = definition.map;
        const start = startMap(
          step,
          { ...definition, map },
          { job: aggregate.job, results, traceparent: options.traceparent, now: options.now, retryDelaySeconds: options.retryDelaySeconds },
          // Maps starting in one change share its first children, so that it stays one transaction.
          Math.max(1, Math.floor(FIRST_CHILDREN / protocol.steps.filter((s) => s.map).length)),
        );
        replace(start.step);
        if (start.kind === "failed") return { steps: [...changed.values()], outbox, done: false, failed: start.step };
        if (start.kind === "started") {
          children.push(...start.children);
          outbox.push(...start.outbox);
        }
        continue;
      }
      const issued = issueDirective({
        job: aggregate.job,
        step,
        results,
        rule: definition.partitionKey,
        timeoutSeconds: definition.timeoutSeconds,
        heartbeatSeconds: definition.heartbeatSeconds,
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
  return { steps: [...changed.values(), ...children], outbox, done };
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
    ...(command.callback ? { callback: command.callback } : {}),
    status: "accepted",
    paused: false,
    redrives: 0,
    changes: 0,
    createdAt: now,
    updatedAt: now,
  };
  if (protocol.steps.length === 0) throw new Error(`protocol ${protocol.requestType} has no steps`);
  const definitions: ProtocolStep[] = protocol.onFailure ? [...protocol.steps, protocol.onFailure] : protocol.steps;
  const steps: Step[] = definitions.map((definition, index) => ({
    ...pendingStep({ jobId, stepId: stepIdFor(jobId, index), index, name: definition.name, topic: definition.topic }, now),
    ...(index === protocol.steps.length ? { compensation: true } : {}),
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
  const children = started.steps.filter((s) => isChildStepId(s.stepId));
  if (started.failed) {
    // A map over the payload whose list is missing or too long: the job fails as it starts.
    const failed = failJob({ job, steps: planned, outbox: started.outbox }, started.failed, {
      protocol,
      now: options.now,
      retryDelaySeconds: options.retryDelaySeconds,
    });
    return {
      job: failed.job,
      steps: planned.map((step) => failed.steps.find((s) => s.stepId === step.stepId) ?? step),
      outbox: [...failed.outbox, ...started.outbox.filter((o) => !failed.outbox.some((f) => f.outboxId === o.outboxId))],
    };
  }
  // Every step skipped at once: the job is done before it started.
  const finished = started.done ? finishJob(startJob(job, now), "succeeded", now) : job;
  return { job: finished, steps: [...planned, ...children], outbox: started.outbox };
}
