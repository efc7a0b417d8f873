/** The operator's view of the outbox: list, stats, retry. No HTTP here. */
import { InvalidTransitionError, NotFoundError, PublishingDisabledError } from "../domain/errors.ts";
import { jobIdOfOutbox } from "../domain/ids.ts";
import type { OutboxEntry, OutboxStatus, OutboxWork, Page } from "../domain/model.ts";
import { hasJobEnded, resetFailedEntry } from "../domain/transitions.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import { leaseAndPublish, type PublishSummary } from "../outbox/lease.ts";
import type { JobStore, OutboxStats } from "../storage/job-store.ts";

export interface AdminServiceOptions {
  store: JobStore;
  dispatcher: Dispatcher | null;
  leaseSeconds: number;
  now?: () => Date;
}

/** Pending entries are taken whatever their due time: "now" means now. */
const FAR_FUTURE = new Date("9999-12-31T23:59:59.999Z");

export function createAdminService(options: AdminServiceOptions) {
  const { store } = options;
  const now = options.now ?? (() => new Date());

  function dispatcher(): Dispatcher {
    if (!options.dispatcher) throw new PublishingDisabledError("LUCIUS_SERVICEBUS_CONNECTION is not set: nothing can be published");
    return options.dispatcher;
  }

  /** failed → pending with a fresh attempt count; the entry as stored. */
  async function reset(work: OutboxWork, at: Date): Promise<OutboxWork> {
    const saved = await store.saveChanges(work.job.jobId, { outbox: [resetFailedEntry(work.entry, at.toISOString())] });
    return { ...work, entry: saved.outbox[0]! };
  }

  async function workOf(entry: OutboxEntry): Promise<OutboxWork | null> {
    const aggregate = await store.getJob(entry.jobId);
    const current = aggregate?.outbox.find((o) => o.outboxId === entry.outboxId);
    const step = aggregate?.steps.find((s) => s.stepId === entry.stepId);
    return aggregate && current && step ? { job: aggregate.job, step, entry: current } : null;
  }

  return {
    list(status: OutboxStatus, limit: number, cursor: string | null): Promise<Page<OutboxEntry>> {
      return store.listOutbox(status, { limit, cursor });
    },

    stats(): Promise<OutboxStats> {
      return store.outboxStats(now());
    },

    /** Publishes pending entries now (and failed ones, reset, when asked). */
    async retryAll(limit: number, includeFailed: boolean): Promise<PublishSummary> {
      const publishing = dispatcher();
      const at = now();
      const work = await store.findDueOutbox(FAR_FUTURE, limit);
      if (includeFailed && work.length < limit) {
        const failed = await store.listOutbox("failed", { limit: limit - work.length, cursor: null });
        for (const entry of failed.items) {
          const found = await workOf(entry);
          // A directive withdrawn because its job ended stays withdrawn.
          if (found && !hasJobEnded(found.job)) work.push(await reset(found, at));
        }
      }
      return leaseAndPublish(work, { store, dispatcher: publishing, leaseSeconds: options.leaseSeconds, now: at });
    },

    /** Publishes one entry now; a failed one starts over with a fresh attempt count. */
    async retryOne(outboxId: string): Promise<{ outboxId: string; status: string }> {
      const publishing = dispatcher();
      const jobId = jobIdOfOutbox(outboxId);
      const aggregate = jobId ? await store.getJob(jobId) : null;
      const entry = aggregate?.outbox.find((o) => o.outboxId === outboxId);
      const step = entry && aggregate?.steps.find((s) => s.stepId === entry.stepId);
      if (!aggregate || !entry || !step) throw new NotFoundError(`outbox entry ${outboxId} does not exist`);
      if (entry.status === "sent") throw new InvalidTransitionError(`outbox entry ${outboxId} was sent already`);
      if (hasJobEnded(aggregate.job))
        throw new InvalidTransitionError(`job ${aggregate.job.jobId} is ${aggregate.job.status}: its directives are not sent any more`);
      const at = now();
      let work: OutboxWork = { job: aggregate.job, step, entry };
      if (entry.status === "failed") work = await reset(work, at);
      await leaseAndPublish([work], { store, dispatcher: publishing, leaseSeconds: options.leaseSeconds, now: at });
      const after = (await store.getJob(aggregate.job.jobId))?.outbox.find((o) => o.outboxId === outboxId);
      return { outboxId, status: after?.status ?? entry.status };
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
