/**
 * A protocol as a graph of steps (docs/ARCHITECTURE.md): each step waits for the steps in its
 * `after` (by default the one before it), may be skipped by its `when`, and the protocol's
 * `onFailure` is a compensation step kept last in every job. Pure functions over a job's steps:
 * which steps are ready, what they are told, when the job is done.
 */
import { resolvePointer } from "./json-pointer.ts";
import type { JobAggregate, JsonObject, Protocol, ProtocolStep, Step, StepCondition } from "./model.ts";

/** The steps a step waits for, by index: its `after`, or the step before it. */
export function predecessorsOf(protocol: Pick<Protocol, "steps">, index: number): number[] {
  const definition = protocol.steps[index];
  if (!definition) return [];
  return definition.after ?? (index === 0 ? [] : [index - 1]);
}

/** Every step a step waits for, directly or not, by index (sorted). */
export function ancestorsOf(protocol: Pick<Protocol, "steps">, index: number): number[] {
  const seen = new Set<number>();
  const visit = (i: number) => {
    for (const p of predecessorsOf(protocol, i)) {
      if (seen.has(p)) continue;
      seen.add(p);
      visit(p);
    }
  };
  visit(index);
  return [...seen].sort((a, b) => a - b);
}

/** The definition of a job's step by index, the compensation step included. */
export function definitionOf(protocol: Protocol | undefined, index: number): ProtocolStep | undefined {
  if (!protocol) return undefined;
  return protocol.steps[index] ?? (index === protocol.steps.length ? protocol.onFailure : undefined);
}

/** Whether a job's step is the protocol's compensation step. */
export function isCompensation(protocol: Protocol | undefined, step: Pick<Step, "index" | "compensation">): boolean {
  return step.compensation === true || (protocol !== undefined && protocol.onFailure !== undefined && step.index === protocol.steps.length);
}

/** Done, for the steps that wait for it: it succeeded, or was skipped. */
export function isDone(step: Pick<Step, "status">): boolean {
  return step.status === "succeeded" || step.status === "skipped";
}

/** The results of the given steps that succeeded, by step name. */
export function resultsOf(steps: readonly Step[], indexes: readonly number[]): Record<string, JsonObject> {
  const results: Record<string, JsonObject> = {};
  for (const index of indexes) {
    const step = steps.find((s) => s.index === index);
    if (step?.status === "succeeded" && step.result) results[step.name] = step.result;
  }
  return results;
}

/** What a step's message carries of earlier results: those of its ancestors. */
export function resultsFor(protocol: Protocol | undefined, steps: readonly Step[], index: number): Record<string, JsonObject> {
  if (!protocol)
    return resultsOf(
      steps,
      steps.filter((s) => s.index < index).map((s) => s.index),
    );
  return resultsOf(steps, ancestorsOf(protocol, index));
}

/** Whether `condition` holds for the document `{ payload, results }`. */
export function conditionHolds(condition: StepCondition, document: { payload: JsonObject; results: Record<string, JsonObject> }): boolean {
  const value = resolvePointer(document, condition.pointer);
  if ("exists" in condition) return (value !== undefined) === condition.exists;
  if ("in" in condition) return condition.in.some((candidate) => jsonEquals(value, candidate));
  return jsonEquals(value, condition.equals);
}

/** Structural equality of JSON values (object member order does not matter). */
function jsonEquals(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, i) => jsonEquals(item, b[i]));
  const left = Object.keys(a);
  const right = Object.keys(b);
  return (
    left.length === right.length &&
    left.every((key) => Object.hasOwn(b, key) && jsonEquals((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]))
  );
}

/** The job's steps that are not its compensation step. */
export function workSteps(protocol: Protocol | undefined, steps: readonly Step[]): Step[] {
  return steps.filter((s) => !isCompensation(protocol, s));
}

/**
 * Pending steps whose predecessors are all done and that have no directive yet, in index order:
 * the ones to dispatch (or skip) now. A step counted as dispatched whose directive is missing
 * (on `table`, a change cut short between its step and its entry) is dispatched again.
 */
export function readySteps(protocol: Protocol, aggregate: Pick<JobAggregate, "steps" | "outbox">): Step[] {
  const directed = new Set(aggregate.outbox.filter((entry) => entry.webhook === undefined).map((entry) => entry.stepId));
  return workSteps(protocol, aggregate.steps).filter(
    (step) =>
      step.status === "pending" &&
      (step.attempts === 0 || !directed.has(step.stepId)) &&
      predecessorsOf(protocol, step.index).every((p) => {
        const predecessor = aggregate.steps.find((s) => s.index === p);
        return predecessor !== undefined && isDone(predecessor);
      }),
  );
}

/**
 * What a job runs when its protocol is no longer configured (removed from the file since the job
 * started): its steps in a line, as they were before graphs, partitioned by job, one attempt
 * each, no deadline.
 */
export function lineOf(aggregate: Pick<JobAggregate, "job" | "steps">): Protocol {
  return {
    requestType: aggregate.job.requestType,
    version: aggregate.job.protocolVersion,
    description: "",
    steps: aggregate.steps
      .filter((step) => !step.compensation)
      .sort((a, b) => a.index - b.index)
      .map((step) => ({ name: step.name, topic: step.topic, partitionKey: { kind: "jobId" as const }, maxAttempts: 1, timeoutSeconds: 0 })),
  };
}
