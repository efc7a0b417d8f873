/**
 * A job's history: one entry per stored change, written in the same change (on `ledger`, the
 * same transaction), so that history and state never disagree. The entry is derived from the
 * change itself (what it dispatched, which steps and what job status it moved) plus its cause,
 * so no rule has to remember to record what it did.
 */
import { isChildStepId } from "./ids.ts";
import type { HistoryAction, HistoryEntry, Job, JobAggregate, JsonObject, OutboxEntry, Step } from "./model.ts";

/**
 * Entries kept per job: the newest, older ones are overwritten. A job has at most 50 steps, each
 * redriven at most LUCIUS_MAX_REDRIVES times with its attempts: 1,000 holds every change of all
 * but pathological jobs, and bounds what one history costs to store and read.
 */
export const MAX_HISTORY_ENTRIES = 1000;

/** Who did what the orchestrator did by itself (a deadline, the intake's own dispatch). */
export const SERVICE_ACTOR = "service";

/** Why a change was made, and by whom. */
export interface HistoryCause {
  action: HistoryAction;
  actor: string;
  step?: string;
  eventId?: string;
  status?: string;
  detail?: JsonObject;
  /**
   * A map child's event: recorded only when it moved something outside its map (the map step
   * ended, a successor was dispatched, the job's status), else the change is not an entry.
   */
  onlyIfVisible?: boolean;
}

type Change = { job?: Job; steps: readonly Step[]; outbox: readonly OutboxEntry[] };

/**
 * The entry recording `change` to `before`, and the job with its count of changes raised (to be
 * written with it: its etag orders the entries of one job). Null when the cause asks to be
 * recorded only if visible and the change moved nothing outside a map.
 */
export function recordChange(
  before: Pick<JobAggregate, "job" | "steps" | "outbox">,
  change: Change,
  cause: HistoryCause,
  now: Date,
): { job: Job; entry: HistoryEntry } | null {
  const nameOf = (stepId: string) => before.steps.find((s) => s.stepId === stepId)?.name ?? stepId;
  const known = new Set(before.outbox.map((o) => o.outboxId));
  const dispatched = change.outbox
    .filter((entry) => entry.etag === undefined && !known.has(entry.outboxId) && !isChildStepId(entry.stepId))
    .map((entry) => ({
      step: nameOf(entry.stepId),
      messageId: entry.outboxId,
      attempt: change.steps.find((s) => s.stepId === entry.stepId)?.attempts ?? 1,
    }));
  const steps = change.steps
    .filter((step) => !isChildStepId(step.stepId))
    .filter((step) => before.steps.find((s) => s.stepId === step.stepId)?.status !== step.status)
    .map((step) => ({ step: step.name, status: step.status }));
  const job = change.job ?? before.job;
  const jobMoved = job.status !== before.job.status;
  if (cause.onlyIfVisible && dispatched.length === 0 && steps.length === 0 && !jobMoved) return null;
  const seq = job.changes + 1;
  const { onlyIfVisible: _, ...said } = cause;
  return {
    job: { ...job, changes: seq },
    entry: {
      jobId: job.jobId,
      seq,
      at: now.toISOString(),
      ...said,
      dispatched,
      steps,
      ...(jobMoved ? { jobStatus: job.status } : {}),
    },
  };
}

/** The entry of a job as it is accepted: what it dispatched (or skipped) as it started. */
export function acceptedEntry(aggregate: JobAggregate, actor: string): { job: Job; entry: HistoryEntry } {
  const accepted = { ...aggregate.job, status: "accepted" as const, changes: 0 };
  const pending = aggregate.steps.filter((s) => !isChildStepId(s.stepId)).map((s) => ({ ...s, status: "pending" as const }));
  const recorded = recordChange(
    { job: accepted, steps: pending, outbox: [] },
    { job: aggregate.job, steps: aggregate.steps, outbox: aggregate.outbox },
    { action: "accepted", actor },
    new Date(aggregate.job.createdAt),
  );
  return recorded!;
}

/** The slot of an entry among a job's MAX_HISTORY_ENTRIES: a newer entry overwrites the oldest. */
export function historySlot(seq: number): number {
  return seq % MAX_HISTORY_ENTRIES;
}
