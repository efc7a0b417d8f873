/**
 * An operator's repairs of one job (docs/API.md, "Repairing jobs"): redrive a failed or cancelled
 * job from where it stopped, optionally with a patched payload or steps skipped by a result;
 * pause and resume; and the job's history. Each repair is one change written with its history
 * entry, decided again if another writer got there first.
 */
import mergePatchModule from "json-merge-patch";
import { type Caller, holdsTenant } from "../auth/caller.ts";
import { type ProtocolRegistry, payloadViolations } from "../config/protocols.ts";
import { MAX_MESSAGE_DATA_BYTES } from "../domain/directives.ts";
import { InvalidCursorError, InvalidTransitionError, NotFoundError, ValidationFailedError } from "../domain/errors.ts";
import type { HistoryCause } from "../domain/history.ts";
import type { HistoryEntry, JobAggregate, JsonObject, Page, Step } from "../domain/model.ts";
import type { HubMessage } from "../domain/notices.ts";
import { type MapChildren, pauseJob, type RepairChange, redriveJob, resumeJob } from "../domain/repair.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import { encodeCursor, readCursor } from "../storage/cursor.ts";
import type { JobStore } from "../storage/job-store.ts";
import { createJobWriter } from "./job-writer.ts";

/** Children read per page when a redriven map step's children are looked through. */
const CHILDREN_PAGE = 1000;

// json-merge-patch is CommonJS: its exports arrive wrapped under some loaders.
const mergePatch = (mergePatchModule as unknown as { default?: typeof mergePatchModule }).default ?? mergePatchModule;

export interface RepairServiceOptions {
  store: JobStore;
  protocols: ProtocolRegistry;
  dispatcher: Dispatcher | null;
  retryDelaySeconds: number;
  /** LUCIUS_MAX_REDRIVES: redrives of one job at most. */
  maxRedrives: number;
  now?: () => Date;
  /** Told after each recorded change (streams listen). */
  announce?: (notice: HubMessage) => void;
}

export interface RedriveInput {
  /** A JSON Merge Patch (RFC 7386) of the job's payload. */
  payload?: unknown;
  /** Steps to mark succeeded with a result instead of running them again, by name. */
  steps?: Record<string, { skip: { result: JsonObject } }>;
  /** The bulk operation redriving it (src/admin/bulk-redrive.ts): it redrives a job once. */
  operationId?: string;
}

export interface RepairResult {
  jobId: string;
  status: string;
  paused: boolean;
  redrives: number;
}

export function createRepairService(options: RepairServiceOptions) {
  const { store, protocols } = options;
  const now = options.now ?? (() => new Date());
  const writer = createJobWriter({ ...options, now });

  function protocolOf(aggregate: JobAggregate) {
    const protocol = protocols.get(aggregate.job.requestType);
    if (!protocol) throw new InvalidTransitionError(`no protocol is configured for '${aggregate.job.requestType}' any more: its jobs cannot be repaired`);
    return protocol;
  }

  /** The payload after the patch, checked like a new command's; 422 with every violation. */
  function patchedPayload(aggregate: JobAggregate, patch: unknown): JsonObject {
    const patched: unknown = mergePatch.apply(structuredClone(aggregate.job.payload), patch);
    if (typeof patched !== "object" || patched === null || Array.isArray(patched)) {
      throw new ValidationFailedError("a payload patch must leave a JSON object", {
        errors: [{ path: "/payload", message: "must be a JSON object (a merge patch)" }],
      });
    }
    const violations = payloadViolations(protocolOf(aggregate), aggregate.job.tenantId, patched);
    if (violations.length > 0)
      throw new ValidationFailedError(`the patched payload violates the schemas of '${aggregate.job.requestType}'`, { errors: violations });
    const bytes = new TextEncoder().encode(JSON.stringify(patched)).byteLength;
    if (bytes > MAX_MESSAGE_DATA_BYTES) {
      throw new ValidationFailedError("the patched payload is too large", {
        errors: [{ path: "/payload", message: `${bytes} bytes, over ${MAX_MESSAGE_DATA_BYTES}` }],
      });
    }
    return patched as JsonObject;
  }

  /**
   * Each failed or cancelled map step's children below its cursor (a child past it was written by
   * a change that lost its race, and was never dispatched), every child read in pages: those to
   * run again, and those that succeeded.
   */
  async function mapChildren(aggregate: JobAggregate): Promise<Record<string, MapChildren>> {
    const read: Record<string, MapChildren> = {};
    for (const step of aggregate.steps) {
      if (step.map === undefined || (step.status !== "failed" && step.status !== "cancelled")) continue;
      const children: Step[] = [];
      for (let from = 0; from < step.map.next; from += CHILDREN_PAGE) {
        const page = await store.listChildren(aggregate.job.jobId, step.index, from, CHILDREN_PAGE);
        children.push(...page.filter((c) => c.itemIndex! < step.map!.next));
        if (page.length < CHILDREN_PAGE) break;
      }
      read[step.stepId] = {
        rerun: children.filter((c) => c.status !== "succeeded").map((c) => c.itemIndex!),
        succeeded: children.filter((c) => c.status === "succeeded").map((c) => c.itemIndex!),
      };
    }
    return read;
  }

  async function repair(
    jobId: string,
    caller: Caller,
    decide: (aggregate: JobAggregate) => Promise<{ change: RepairChange; cause: HistoryCause }> | { change: RepairChange; cause: HistoryCause },
  ): Promise<RepairResult> {
    return writer.withRetries(jobId, caller, async (aggregate) => {
      const { change, cause } = await decide(aggregate);
      const saved = await writer.commit(aggregate, change, cause);
      const job = saved.job ?? change.job;
      return { jobId, status: job.status, paused: job.paused, redrives: job.redrives };
    });
  }

  return {
    /**
     * Of redrives racing for one job, one wins: the others decide again against the job it left
     * (in progress) and are refused (409).
     */
    redrive(jobId: string, input: RedriveInput, caller: Caller): Promise<RepairResult> {
      return repair(jobId, caller, async (aggregate) => {
        const protocol = protocolOf(aggregate);
        // The job's status first: a patch of a job that cannot be redriven is not worth checking.
        if (aggregate.job.status !== "failed" && aggregate.job.status !== "cancelled") {
          throw new InvalidTransitionError(`job ${jobId} is ${aggregate.job.status}: only a failed or cancelled job can be redriven`);
        }
        const payload = input.payload === undefined ? undefined : patchedPayload(aggregate, input.payload);
        const skip = Object.fromEntries(Object.entries(input.steps ?? {}).map(([name, how]) => [name, how.skip.result]));
        const change = redriveJob(
          aggregate,
          {
            ...(payload ? { payload } : {}),
            skip,
            maxRedrives: options.maxRedrives,
            mapChildren: await mapChildren(aggregate),
            ...(input.operationId ? { operationId: input.operationId } : {}),
          },
          { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds },
        );
        const detail: JsonObject = { redrive: change.job.redrives };
        if (input.payload !== undefined) detail.payloadPatch = input.payload as JsonObject;
        if (Object.keys(skip).length > 0) detail.skipped = Object.keys(skip);
        if (input.operationId) detail.operation = input.operationId;
        return { change, cause: { action: "redrive", actor: caller.name, detail } };
      });
    },

    pause(jobId: string, caller: Caller): Promise<RepairResult> {
      return repair(jobId, caller, (aggregate) => ({ change: pauseJob(aggregate, now()), cause: { action: "pause", actor: caller.name } }));
    },

    resume(jobId: string, caller: Caller): Promise<RepairResult> {
      return repair(jobId, caller, (aggregate) => ({
        change: resumeJob(aggregate, { protocol: protocolOf(aggregate), now: now(), retryDelaySeconds: options.retryDelaySeconds }),
        cause: { action: "resume", actor: caller.name },
      }));
    },

    /** Entries after the cursor's, oldest first. */
    async history(jobId: string, limit: number, cursor: string | null, caller: Caller): Promise<Page<HistoryEntry>> {
      const aggregate = await store.getJob(jobId);
      if (!aggregate || !holdsTenant(caller, aggregate.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
      const after = cursor === null ? 0 : Number(readCursor(cursor));
      if (!Number.isInteger(after) || after < 0) throw new InvalidCursorError("the cursor is not one this service issued");
      const items = await store.getHistory(jobId, after, limit);
      const last = items.at(-1);
      return { items, nextCursor: items.length === limit && last ? encodeCursor(String(last.seq)) : null };
    },
  };
}

export type RepairService = ReturnType<typeof createRepairService>;
