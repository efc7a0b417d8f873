/**
 * How every change of a running job is made, whoever makes it (a worker's event, a deadline, an
 * operator's repair): read the job, let a pure rule decide, write the change conditionally with
 * its history entry, hand the new directives to the dispatcher, and do what follows (fill a map
 * up, close an ended job's children). A lost race re-reads and decides again.
 */
import { type Caller, holdsTenant } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { catchUp } from "../domain/catch-up.ts";
import { ConcurrencyConflictError, NotFoundError } from "../domain/errors.ts";
import { definitionOf } from "../domain/graph.ts";
import { type HistoryCause, recordChange } from "../domain/history.ts";
import { childStepIdFor, isChildStepId } from "../domain/ids.ts";
import { CHILDREN_PER_CHANGE, fillMap, rerunsWanted, wantsChildren } from "../domain/map-step.ts";
import type { Job, JobAggregate, OutboxEntry, OutboxWork, Step } from "../domain/model.ts";
import type { HubMessage } from "../domain/notices.ts";
import { cancelStep, hasJobEnded, withdrawEntry } from "../domain/transitions.ts";
import { webhookDeliveries } from "../domain/webhooks.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import type { JobStore, SavedChanges } from "../storage/job-store.ts";
import { continueTrace, tracingEnabled } from "../telemetry/tracing.ts";

export interface JobWriterOptions {
  store: JobStore;
  protocols: Pick<ProtocolRegistry, "get">;
  dispatcher: Dispatcher | null;
  retryDelaySeconds: number;
  now: () => Date;
  /** Told after each recorded change (streams listen); absent: nobody is. */
  announce?: (notice: HubMessage) => void;
}

/** A decided change of one job. */
export type Change = { job?: Job; steps: Step[]; outbox: OutboxEntry[] };

export const ATTEMPTS = 5;

/** What a decision made against a kept copy answers when it must be made again against a fresh read (see withRecent). */
export const DECIDE_AFRESH: unique symbol = Symbol("decide afresh");
/** Fill-up changes after one event, at most (each adds up to CHILDREN_PER_CHANGE children). */
const MAX_FILL_ROUNDS = 25;

export function createJobWriter(options: JobWriterOptions) {
  const { store, dispatcher, now } = options;

  /** The job, when it exists for this caller: another tenant's job is not found. */
  async function load(jobId: string, caller: Caller): Promise<JobAggregate> {
    const aggregate = await store.getJob(jobId);
    if (!aggregate || !holdsTenant(caller, aggregate.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
    return aggregate;
  }

  /** The directives a change creates carry the trace they were made in (see continueTrace). */
  function traced(before: JobAggregate, outbox: OutboxEntry[]): OutboxEntry[] {
    if (!tracingEnabled()) return outbox;
    return outbox.map((entry) => (before.outbox.some((o) => o.outboxId === entry.outboxId) ? entry : continueTrace(entry)));
  }

  /** Publishes the directives a change created, on the fast path (the sweeper backs it up). */
  function dispatchCreated(before: JobAggregate, saved: SavedChanges): void {
    if (!dispatcher) return;
    const job = saved.job ?? before.job;
    const work: OutboxWork[] = saved.outbox
      .filter((entry) => entry.status === "pending" && !before.outbox.some((o) => o.outboxId === entry.outboxId))
      .flatMap((entry) => {
        const step = saved.steps.find((s) => s.stepId === entry.stepId) ?? before.steps.find((s) => s.stepId === entry.stepId);
        return step ? [{ job, step, entry }] : [];
      });
    if (work.length > 0) dispatcher.dispatch(work);
    // Directives this change marked sent (their worker answered first): the publish's own write is spared.
    const answered = saved.outbox.filter(
      (entry) => entry.status === "sent" && before.outbox.some((o) => o.outboxId === entry.outboxId && o.status === "pending"),
    );
    if (answered.length > 0) dispatcher.answered(answered.map((entry) => entry.outboxId));
  }

  /**
   * Runs `decide` against the current job until its write wins. The children of a map step all
   * count on its row, so their events race for it: more attempts, after a short random pause.
   */
  async function withRetries<T>(jobId: string, caller: Caller, decide: (aggregate: JobAggregate) => Promise<T>, attempts = ATTEMPTS): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        const aggregate = await caughtUp(await load(jobId, caller));
        // The try before may have ended the job and lost its race before closing its maps' children.
        if (store.writesRowsApart && attempt > 1 && hasJobEnded(aggregate.job)) await closeChildren(jobId, mapIndexes(aggregate.steps));
        return await decide(aggregate);
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError) || attempt >= attempts) throw error;
        if (attempts > ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
      }
    }
  }

  /**
   * Like withRetries, but decides first against the job as this process last saw it, when the
   * store keeps it (`ledger`, see storage/recent-jobs.ts): no read. `decide` commits what it
   * decided on the copy with `decidedOn` passed on (the change then writes the job's row and is
   * fenced on the rest, so that a stale copy loses the write), and answers DECIDE_AFRESH for
   * whatever it would answer without writing (an ignored event): that, and a lost write, are
   * decided again against a fresh read.
   */
  async function withRecent<T>(
    jobId: string,
    caller: Caller,
    decide: (aggregate: JobAggregate, decidedOn: "read" | "kept copy") => Promise<T | typeof DECIDE_AFRESH>,
  ): Promise<T> {
    // A change of this job still in flight here (its publish marked) is waited for: deciding on the
    // copy from before it would lose the race to it.
    await store.settled?.(jobId);
    const kept = store.recentJob?.(jobId) ?? null;
    if (kept && holdsTenant(caller, kept.job.tenantId)) {
      try {
        const result = await decide(kept, "kept copy");
        if (result !== DECIDE_AFRESH) return result;
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError)) throw error;
      }
      store.forgetJob?.(jobId);
    }
    return withRetries(jobId, caller, async (aggregate) => {
      const result = await decide(aggregate, "read");
      if (result === DECIDE_AFRESH) throw new Error("decided afresh against a fresh read");
      return result;
    });
  }

  /**
   * The job with what a change cut short left undone completed first (see domain/catch-up.ts):
   * only where a change's rows are written apart (`table`); on `memory` and `ledger` every change
   * lands whole, and nothing is spent on it per event.
   */
  async function caughtUp(aggregate: JobAggregate): Promise<JobAggregate> {
    if (!store.writesRowsApart) return aggregate;
    const change = catchUp(aggregate, { protocol: options.protocols.get(aggregate.job.requestType), now: now(), retryDelaySeconds: options.retryDelaySeconds });
    if (!change) return aggregate;
    await commit(aggregate, change);
    return (await store.getJob(aggregate.job.jobId)) ?? aggregate;
  }

  /**
   * Stores a decided change with its history entry (when it has a cause: see recordChange), hands
   * its new directives to the dispatcher, and does what follows it. A change with an entry writes
   * the job's row, conditionally: two changes of one job decided side by side (two parallel
   * branches ending) cannot both win, so the second decides again and sees the first.
   */
  async function commit(before: JobAggregate, change: Change, cause?: HistoryCause, decidedOn: "read" | "kept copy" = "read"): Promise<SavedChanges> {
    const { jobId } = before.job;
    const recorded = cause ? recordChange(before, change, cause, now()) : null;
    const job = recorded?.job ?? change.job;
    // A copy may be stale in a row the change does not write: the change lands only if none moved.
    if (decidedOn === "kept copy" && !job) throw new Error("a change decided on a kept copy writes the job's row");
    const fence = decidedOn === "kept copy" ? fenceOf(before, change) : undefined;
    const listed = job === undefined || (job.status === before.job.status && job.paused === before.job.paused);
    // What the job's callback asked to be told of this change: written with it.
    const callback = job?.callback;
    const deliveries =
      recorded && job && callback
        ? webhookDeliveries(
            { ...job, callback },
            recorded.entry,
            [...change.steps, ...before.steps].filter((s) => !isChildStepId(s.stepId)),
            {
              now: now(),
              retryDelaySeconds: options.retryDelaySeconds,
            },
          )
        : [];
    const saved = await store.saveChanges(jobId, {
      ...(job ? { job } : {}),
      steps: change.steps,
      outbox: [...traced(before, change.outbox), ...deliveries],
      ...(recorded ? { history: recorded.entry } : {}),
      ...(listed ? { listingUnchanged: true } : {}),
      ...(fence ? { fence } : {}),
    });
    dispatchCreated(before, saved);
    if (recorded && options.announce) {
      const job = saved.job ?? before.job;
      options.announce({
        kind: "change",
        tenantId: job.tenantId,
        jobId,
        requestType: job.requestType,
        seq: recorded.entry.seq,
        jobStatus: job.status,
        entry: recorded.entry,
      });
    }
    await afterChange(before, saved);
    return saved;
  }

  /**
   * After a stored change: a map step still short of its children gets more (a change each, up
   * to CHILDREN_PER_CHANGE), and a job that ended has its maps' unsent child directives withdrawn
   * and their open children cancelled. Both are best effort: a child's end fills a map up too,
   * and the retry loop withdraws, instead of publishing, a child directive of an ended job.
   */
  async function afterChange(before: JobAggregate, saved: SavedChanges): Promise<void> {
    const { job } = before;
    const { jobId } = job;
    const protocol = options.protocols.get(job.requestType);
    const short = (s: Step) => {
      const map = definitionOf(protocol, s.index)?.map;
      return map !== undefined && wantsChildren(s, map);
    };
    try {
      if (saved.job && hasJobEnded(saved.job)) {
        // Only map steps have children to close: other jobs cost nothing more here.
        await closeChildren(jobId, mapIndexes([...before.steps, ...saved.steps]));
      } else if (saved.steps.some(short) || (saved.job && !saved.job.paused && before.job.paused && before.steps.some(short))) await fillMaps(jobId);
    } catch (error) {
      if (!(error instanceof ConcurrencyConflictError)) throw error;
      // Another writer moved the job on: it fills or closes in turn.
    }
  }

  async function fillMaps(jobId: string): Promise<void> {
    for (let round = 0; round < MAX_FILL_ROUNDS; round++) {
      const aggregate = await store.getJob(jobId);
      if (!aggregate || hasJobEnded(aggregate.job)) return;
      const protocol = options.protocols.get(aggregate.job.requestType);
      // A redriven map's children that run again are rows already: read the next few first.
      const wanted = aggregate.steps.flatMap((s) => {
        const map = definitionOf(protocol, s.index)?.map;
        return map ? rerunsWanted(s, map).map((item) => childStepIdFor(jobId, s.index, item)) : [];
      });
      const reruns = wanted.length > 0 ? (await store.getChildren(jobId, wanted)).steps : [];
      const change = fillMap(aggregate, { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds }, reruns);
      if (!change) return;
      const saved = await store.saveChanges(jobId, { ...change, outbox: traced(aggregate, change.outbox) });
      dispatchCreated(aggregate, saved);
    }
  }

  /** The map steps among `steps`, by index. */
  function mapIndexes(steps: readonly Step[]): number[] {
    return [...new Set(steps.filter((s) => s.map !== undefined).map((s) => s.index))];
  }

  /** Cancels the open children of the given map steps of an ended job, and withdraws their unsent directives. */
  async function closeChildren(jobId: string, mapIndexes: readonly number[]): Promise<void> {
    const at = now().toISOString();
    for (const index of mapIndexes) {
      for (let conflicts = 0; ; ) {
        const open = await store.listChildren(jobId, index, 0, CHILDREN_PER_CHANGE, true);
        if (open.length === 0) break;
        const { outbox } = await store.getChildren(
          jobId,
          open.map((c) => c.stepId),
        );
        try {
          await store.saveChanges(jobId, {
            steps: open.map((c) => cancelStep(c, at)),
            outbox: outbox.filter((o) => o.status === "pending").map((o) => withdrawEntry(o, "job ended before this directive was sent", at)),
          });
        } catch (error) {
          // A child's publish outcome landed meanwhile: list again and retry.
          if (!(error instanceof ConcurrencyConflictError) || ++conflicts > ATTEMPTS) throw error;
        }
      }
    }
  }

  return { load, withRetries, withRecent, commit, announce: (notice: HubMessage) => options.announce?.(notice) };
}

export type JobWriter = ReturnType<typeof createJobWriter>;

/**
 * The rows a change decided on `before` relies on without writing them, that may have moved
 * without the job's row: its failed directives (an operator's reset makes one pending again).
 * Every other row that moves without the job's row only moves forward (a directive sent or
 * parked failed, a step initiated, its progress or deadline, a map's count of children), and a
 * decision that depends on such a row writes it (a cancel withdraws pending directives and
 * cancels open steps; an answer marks its directive delivered), conditionally. Fencing those too
 * would refuse this process's own publish outcomes and leases for nothing. Webhook deliveries
 * are read by no decision.
 */
export function fenceOf(before: JobAggregate, change: Change): { steps: Step[]; outbox: OutboxEntry[] } {
  const written = new Set(change.outbox.map((o) => o.outboxId));
  return { steps: [], outbox: before.outbox.filter((o) => !o.webhook && o.status === "failed" && !written.has(o.outboxId)) };
}
