/**
 * The step message a worker receives (docs/API.md, "Messages to workers"), as the handler sees
 * it: the body's fields, typed, plus what the broker knows (delivery count, the attempt's
 * deadline computed from the enqueued time).
 */
import type { ServiceBusReceivedMessage } from "@azure/service-bus";

export type JsonObject = Record<string, unknown>;

export interface StepMessage<Payload = JsonObject> {
  /** The message's id (the outbox id): the same on every redelivery. */
  messageId: string;
  jobId: string;
  stepId: string;
  stepName: string;
  stepIndex: number;
  /** Which dispatch of the step this is, from 1. */
  attempt: number;
  requestType: string;
  tenantId: string;
  correlationId: string | null;
  payload: Payload;
  /** What the step's predecessors produced, by step name. */
  results: Record<string, JsonObject>;
  /** The compensation (`onFailure`) step's: which step failed the job, and how. */
  failure?: { step: string; error: { code: string; message: string; retryable: boolean } };
  /** A map step's child: its item and the item's index. */
  item?: unknown;
  itemIndex?: number;
  /** How often the service must hear from this attempt, when the step has a heartbeat. */
  heartbeatSeconds?: number;
  /** When the attempt ends (its send plus the step's timeout); null without a timeout. */
  deadline: Date | null;
  /** Grows with each redelivery of the message (abandoned, or its lock ran out). */
  deliveryCount: number;
  /** Where the step's events go (the service's events entity). */
  replyTo: string | null;
  /** W3C trace context of the message's publish, when the service traces. */
  traceparent: string | null;
}

/** Why a message is not a step message, or null when it is one. */
function problemOf(body: unknown): string | null {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "the body is not a JSON object";
  const b = body as Record<string, unknown>;
  for (const field of ["jobId", "stepId", "stepName", "requestType", "tenantId"]) if (typeof b[field] !== "string") return `${field} is missing`;
  if (typeof b.attempt !== "number") return "attempt is missing";
  if (typeof b.payload !== "object" || b.payload === null) return "payload is missing";
  return null;
}

export function readStepMessage<Payload>(message: ServiceBusReceivedMessage): StepMessage<Payload> | { problem: string } {
  const body = message.body as Record<string, unknown>;
  const problem = problemOf(body);
  if (problem) return { problem };
  const timeoutSeconds = typeof body.timeoutSeconds === "number" ? body.timeoutSeconds : 0;
  const enqueued = message.enqueuedTimeUtc?.getTime() ?? Date.now();
  const traceparent = message.applicationProperties?.traceparent;
  return {
    messageId: String(message.messageId),
    jobId: body.jobId as string,
    stepId: body.stepId as string,
    stepName: body.stepName as string,
    stepIndex: typeof body.stepIndex === "number" ? body.stepIndex : 0,
    attempt: body.attempt as number,
    requestType: body.requestType as string,
    tenantId: body.tenantId as string,
    correlationId: typeof body.correlationId === "string" ? body.correlationId : null,
    payload: body.payload as Payload,
    results: (body.results ?? {}) as Record<string, JsonObject>,
    ...(body.failure ? { failure: body.failure as NonNullable<StepMessage["failure"]> } : {}),
    ...(typeof body.itemIndex === "number" ? { item: body.item, itemIndex: body.itemIndex } : {}),
    ...(typeof body.heartbeatSeconds === "number" ? { heartbeatSeconds: body.heartbeatSeconds } : {}),
    deadline: timeoutSeconds > 0 ? new Date(enqueued + timeoutSeconds * 1000) : null,
    deliveryCount: message.deliveryCount ?? 1,
    replyTo: message.replyTo ?? null,
    traceparent: typeof traceparent === "string" ? traceparent : null,
  };
}
