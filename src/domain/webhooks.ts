/**
 * Webhooks as outbox entries (docs/API.md, "Webhooks"): each reported event is a delivery entry
 * written in the same stored change as the event, so nothing is reported that did not happen and
 * nothing that happened goes unreported; the outbox workers deliver it like any directive, under
 * one id (`webhook-id`) on every attempt.
 */

import { stepIdFor } from "./ids.ts";
import type { HistoryEntry, Job, JobCallback, JsonObject, OutboxEntry, Step, WebhookEventType } from "./model.ts";

/** The topic deliveries are counted under (metrics, the admin views); never a Service Bus topic. */
export const WEBHOOK_TOPIC = "lucius.webhooks";

/** What a command's callback asks for when it names no events: the job's end. */
export const DEFAULT_WEBHOOK_EVENTS: WebhookEventType[] = ["job.succeeded", "job.failed", "job.cancelled"];

export function isWebhook(entry: Pick<OutboxEntry, "webhook">): boolean {
  return entry.webhook !== undefined;
}

/**
 * The deliveries a recorded change owes the job's callback: its steps that succeeded or failed,
 * then the job's end, as asked for. Ids are `<jobId>.w<seq>.<n>`: the same change gives the same
 * ids, so a repeated write is the same entries.
 */
export function webhookDeliveries(
  job: Job & { callback: JobCallback },
  entry: HistoryEntry,
  steps: readonly Pick<Step, "stepId" | "index" | "name" | "result" | "error" | "attempts">[],
  options: { now: Date; retryDelaySeconds: number },
): OutboxEntry[] {
  const wanted = new Set(job.callback.events);
  const events: { type: WebhookEventType; stepIndex: number; stepId: string; data: JsonObject }[] = [];
  const base = { jobId: job.jobId, tenantId: job.tenantId, requestType: job.requestType, correlationId: job.correlationId, seq: entry.seq };
  for (const moved of entry.steps) {
    const type = moved.status === "succeeded" ? "step.succeeded" : moved.status === "failed" ? "step.failed" : null;
    const step = steps.find((s) => s.name === moved.step);
    if (!type || !wanted.has(type) || !step) continue;
    const outcome = type === "step.succeeded" ? { result: step.result } : { error: step.error };
    events.push({ type, stepIndex: step.index, stepId: step.stepId, data: { ...base, step: step.name, attempt: step.attempts, ...outcome } });
  }
  if (entry.jobStatus === "succeeded" || entry.jobStatus === "failed" || entry.jobStatus === "cancelled") {
    const type = `job.${entry.jobStatus}` as const;
    if (wanted.has(type)) events.push({ type, stepIndex: 0, stepId: stepIdFor(job.jobId, 0), data: { ...base, status: entry.jobStatus } });
  }
  const at = options.now.toISOString();
  return events.map((event, n) => ({
    outboxId: `${job.jobId}.w${entry.seq}.${n}`,
    jobId: job.jobId,
    stepId: event.stepId,
    stepIndex: event.stepIndex,
    topic: WEBHOOK_TOPIC,
    partitionKey: job.jobId,
    traceparent: null,
    results: {},
    webhook: { url: job.callback.url, type: event.type, body: { type: event.type, timestamp: at, data: event.data } },
    status: "pending",
    attempts: 0,
    nextAttemptAt: new Date(options.now.getTime() + options.retryDelaySeconds * 1000).toISOString(),
    lease: null,
    lastError: null,
    sentAt: null,
    createdAt: at,
    updatedAt: at,
  }));
}
