import { attemptOfOutbox } from "../domain/ids.ts";
import type { Job, OutboxEntry, Step } from "../domain/model.ts";
import type { OutboundMessage } from "./publisher.ts";

/** The Service Bus message for one outbox entry (docs/API.md, "Messages to workers"); its id is the outbox id. */
export function buildMessage(job: Job, step: Step, entry: OutboxEntry, replyTo: string | null = null): OutboundMessage {
  const applicationProperties: Record<string, string> = {
    jobId: job.jobId,
    stepId: step.stepId,
    stepName: step.name,
    requestType: job.requestType,
    tenantId: job.tenantId,
  };
  if (entry.traceparent) applicationProperties.traceparent = entry.traceparent;
  return {
    messageId: entry.outboxId,
    body: {
      jobId: job.jobId,
      stepId: step.stepId,
      stepName: step.name,
      stepIndex: step.index,
      outboxId: entry.outboxId,
      // Echoed in the worker's events: an answer of an attempt that timed out is then ignored.
      attempt: attemptOfOutbox(entry.outboxId),
      // Send an event (progress counts) at least this often, or the attempt is over.
      ...(entry.heartbeatSeconds ? { heartbeatSeconds: entry.heartbeatSeconds } : {}),
      // The attempt ends this long after the message was sent (its enqueued time) unless it answered.
      ...(entry.timeoutSeconds ? { timeoutSeconds: entry.timeoutSeconds } : {}),
      requestType: job.requestType,
      tenantId: job.tenantId,
      correlationId: job.correlationId,
      payload: job.payload,
      results: entry.results,
      // The compensation step's: which step failed the job, and its error.
      ...(entry.failure ? { failure: entry.failure } : {}),
      // A map step's child: its item and where it sits in the list.
      ...(step.itemIndex === undefined ? {} : { item: step.item ?? null, itemIndex: step.itemIndex }),
    },
    contentType: "application/json",
    subject: `${job.requestType}/${step.name}`,
    correlationId: job.correlationId ?? job.jobId,
    partitionKey: entry.partitionKey,
    applicationProperties,
    ...(replyTo ? { replyTo } : {}),
  };
}
