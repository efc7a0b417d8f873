/** The publishing port: the Service Bus adapter implements it, tests use a recording one. */

/** A message to workers (docs/API.md, "Messages to workers"), independent of any SDK. */
export interface OutboundMessage {
  messageId: string;
  body: {
    jobId: string;
    stepId: string;
    stepName: string;
    stepIndex: number;
    outboxId: string;
    /** Which attempt of the step this is, from 1: the worker echoes it in its events. */
    attempt: number;
    /** The step's heartbeat interval: the worker reports (progress counts) at least this often. */
    heartbeatSeconds?: number;
    /** The attempt's length, from the message's send: a worker stops once it has passed. */
    timeoutSeconds?: number;
    requestType: string;
    tenantId: string;
    correlationId: string | null;
    payload: Record<string, unknown>;
    /** The results of the step's predecessors, direct and indirect, by step name. */
    results: Record<string, Record<string, unknown>>;
    /** The compensation step's: which step failed the job, and its error. */
    failure?: { step: string; error: { code: string; message: string; retryable: boolean } };
    /** A map step's child: its item and the item's index in the list. */
    item?: unknown;
    itemIndex?: number;
  };
  contentType: "application/json";
  subject: string;
  correlationId: string;
  partitionKey: string;
  /** Where workers answer with step events (LUCIUS_EVENTS_ENTITY), when set. */
  replyTo?: string;
  applicationProperties: Record<string, string>;
}

/** `retryAfterSeconds`: when the receiver asked to be tried again (a webhook's Retry-After). */
export type PublishOutcome = { ok: true } | { ok: false; error: string; retryable: boolean; retryAfterSeconds?: number };

export interface Publisher {
  /**
   * Publishes messages to one topic. Returns one outcome per message, in order, so that one bad
   * message fails alone; throws (PublishError or anything else) when the whole call failed.
   * `signal` aborts when the caller stops waiting.
   */
  publish(topic: string, messages: OutboundMessage[], signal: AbortSignal): Promise<PublishOutcome[]>;
  /** Throws when the broker cannot be reached: for /readyz. */
  check(): Promise<void>;
  close(): Promise<void>;
}

/** A publish failure, retryable or not: a permanent one fails its entry at once. Anything else thrown counts as retryable. */
export class PublishError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "PublishError";
  }
}
