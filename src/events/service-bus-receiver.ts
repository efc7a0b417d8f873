/**
 * Step events from Service Bus (LUCIUS_EVENTS_ENTITY): peekLock; complete once the event's
 * change is stored (or it changed nothing), abandon on a transient failure so it comes back,
 * dead-letter what can never be applied (malformed, unknown job or step) with the reason.
 */
import { ServiceBusClient, type ServiceBusReceivedMessage, type ServiceBusReceiver } from "@azure/service-bus";
import { SpanKind } from "@opentelemetry/api";
import { Value } from "@sinclair/typebox/value";
import { type Caller, OPEN_CALLER } from "../auth/caller.ts";
import { DomainError, NotFoundError, ValidationFailedError } from "../domain/errors.ts";
import type { StepEvent } from "../domain/step-events.ts";
import type { StepEventService } from "../jobs/step-events.ts";
import type { Logger } from "../logging/logger.ts";
import { contextOf, MESSAGING, SERVICE_BUS_SYSTEM, withSpan } from "../telemetry/tracing.ts";
import { assertJsonWithinLimits, parseJsonText } from "../validation/json-value.ts";
import { StepEventMessage } from "../validation/step-event.ts";
import { violationsOf } from "../validation/violations.ts";
import { createOutageLog, REMIND_EVERY_MS } from "./outage-log.ts";

/** Pauses before subscribing again to an entity that failed for good: 1 s, doubling, at most a minute. */
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;
/** A subscription this long without an error is taken as working. */
const HEALTHY_AFTER_MS = 5000;
/** The queue's senders: trusted like an open service (the namespace's access is the credential), named in job histories. */
const SERVICE_BUS_CALLER: Caller = { ...OPEN_CALLER, name: "service-bus" };

export interface EventReceiverOptions {
  connectionString: string;
  /** A queue, or `topic/Subscriptions/name`. */
  entity: string;
  events: StepEventService;
  logger: Logger;
  /** Events handled at once (LUCIUS_EVENTS_CONCURRENCY); the subscription's credit, so its prefetch too. */
  concurrency: number;
  /** Each error the SDK reports (for the metrics); the log shows an outage in a few lines. */
  onError?: () => void;
  /** Called after the store commit, before the message is completed: tests inject crashes here. */
  beforeComplete?: (eventId: string) => Promise<void> | void;
}

export interface EventReceiver {
  start(): void;
  /** Throws, saying why, while events cannot be received (for /readyz). */
  check(): Promise<void>;
  close(): Promise<void>;
}

/** The event as JSON within the same limits as an HTTP body; throws a domain error saying why not. */
function decodeBody(body: unknown): unknown {
  if (body instanceof Uint8Array) return parseJsonText(new TextDecoder().decode(body));
  if (typeof body === "string") return parseJsonText(body);
  assertJsonWithinLimits(body);
  return body;
}

export function createEventReceiver(options: EventReceiverOptions): EventReceiver {
  const { logger } = options;
  const client = new ServiceBusClient(options.connectionString, { retryOptions: { maxRetries: 1, retryDelayInMs: 200 } });
  const [topic, , subscription] = options.entity.split("/");
  let receiver: ServiceBusReceiver | null = null;
  let subscription_: { close(): Promise<void> } | null = null;

  const outage = createOutageLog({ logger, entity: options.entity, ...(options.onError ? { onError: options.onError } : {}) });
  /** After an error, this long without another means the SDK has reconnected. */
  let quietTimer: ReturnType<typeof setTimeout> | undefined;

  /** With tracing on, a CONSUMER span continuing the trace the event carries (the worker's). */
  function process(message: ServiceBusReceivedMessage, via: ServiceBusReceiver): Promise<void> {
    const traceparent = message.applicationProperties?.traceparent;
    return withSpan(
      `process ${options.entity}`,
      {
        kind: SpanKind.CONSUMER,
        parent: contextOf(typeof traceparent === "string" ? traceparent : null),
        attributes: {
          [MESSAGING.system]: SERVICE_BUS_SYSTEM,
          [MESSAGING.operationType]: "process",
          [MESSAGING.operationName]: "process",
          [MESSAGING.destination]: options.entity,
          ...(typeof message.messageId === "string" ? { [MESSAGING.messageId]: message.messageId } : {}),
        },
      },
      () => processMessage(message, via),
    );
  }

  async function processMessage(message: ServiceBusReceivedMessage, via: ServiceBusReceiver): Promise<void> {
    if (outage.down) {
      clearTimeout(quietTimer);
      outage.recovered();
    }
    let parsed: unknown;
    try {
      parsed = decodeBody(message.body);
    } catch (error) {
      const problems = error instanceof DomainError && error.errors ? error.errors.slice(0, 5).map((e) => `${e.path || "/"}: ${e.message}`) : [];
      await via.deadLetterMessage(message, {
        deadLetterReason: "MalformedEvent",
        deadLetterErrorDescription: [(error as Error).message, ...problems].join("; "),
      });
      return;
    }
    if (!Value.Check(StepEventMessage, parsed)) {
      const problems = violationsOf(Value.Errors(StepEventMessage, parsed))
        .slice(0, 5)
        .map((e) => `${e.path || "/"}: ${e.message}`);
      await via.deadLetterMessage(message, { deadLetterReason: "MalformedEvent", deadLetterErrorDescription: problems.join("; ") });
      logger.warn({ messageId: message.messageId, problems }, "dead-lettered a malformed step event");
      return;
    }
    const { jobId, stepId, ...event } = parsed;
    try {
      // The events entity is reached only with the namespace's own credentials: a trusted channel.
      const result = await options.events.handle(jobId, stepId, event as StepEvent, SERVICE_BUS_CALLER);
      await options.beforeComplete?.(event.eventId);
      await via.completeMessage(message);
      logger.info({ jobId, stepId, eventId: event.eventId, outcome: result.outcome }, "step event received");
    } catch (error) {
      if (error instanceof NotFoundError) {
        await via.deadLetterMessage(message, { deadLetterReason: "UnknownJobOrStep", deadLetterErrorDescription: error.message });
        return;
      }
      // Applying it again would be refused again (a result too large to hand on, say).
      if (error instanceof ValidationFailedError) {
        await via.deadLetterMessage(message, { deadLetterReason: "InvalidEvent", deadLetterErrorDescription: error.message });
        return;
      }
      // Storage down, a lost race, a crash before completing: the event comes back and, applied
      // twice, changes nothing the second time (eventIds are remembered).
      logger.warn(
        { err: error, jobId, stepId, eventId: event.eventId, code: error instanceof DomainError ? error.code : undefined },
        "step event abandoned for a later delivery",
      );
      await via.abandonMessage(message).catch(() => {});
    }
  }

  /** Why the receiver does not receive, for readiness; null while it works. */
  let failing: string | null = null;
  let stopped = true;
  let backoffMs = MIN_BACKOFF_MS;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  let healthyTimer: ReturnType<typeof setTimeout> | undefined;

  function subscribe(): void {
    receiver = subscription
      ? client.createReceiver(topic!, subscription, { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 })
      : client.createReceiver(options.entity, { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
    const via = receiver;
    subscription_ = via.subscribe(
      { processMessage: (message) => process(message, via), processError: async ({ error, errorSource }) => onError(error, errorSource) },
      { autoCompleteMessages: false, maxConcurrentCalls: options.concurrency },
    );
    // No error for a while after (re)subscribing: the entity answers.
    clearTimeout(healthyTimer);
    healthyTimer = setTimeout(() => {
      failing = null;
      backoffMs = MIN_BACKOFF_MS;
    }, HEALTHY_AFTER_MS);
  }

  /**
   * An entity that does not exist (or refuses us) makes the SDK fail again at once, forever: stop,
   * say so once, and try again after a growing pause. Other errors the SDK recovers from itself.
   */
  function onError(error: Error, source: string): void {
    if (stopped) return;
    // One message's handling failed (a settlement that did not reach the broker): its lock runs
    // out and it comes back; the link itself is fine.
    if (source === "processMessageCallback") {
      options.onError?.();
      logger.warn({ err: error, entity: options.entity }, "a step event could not be settled; it is delivered again when its lock runs out");
      return;
    }
    const code = (error as { code?: string }).code;
    if (code !== "MessagingEntityNotFound" && code !== "UnauthorizedAccess") {
      outage.error(error);
      // Errors may come far apart (connect timeouts): only a minute without one, or a message, is a recovery.
      clearTimeout(quietTimer);
      quietTimer = setTimeout(() => outage.recovered(), REMIND_EVERY_MS);
      quietTimer.unref?.();
      return;
    }
    options.onError?.();
    if (restartTimer !== undefined || stopped) return;
    clearTimeout(healthyTimer);
    failing = code === "MessagingEntityNotFound" ? `the events entity '${options.entity}' does not exist` : `no right to receive from '${options.entity}'`;
    logger.error({ entity: options.entity, code, retryInSeconds: backoffMs / 1000 }, `step events cannot be received: ${failing}`);
    const closing = subscription_?.close().then(() => receiver?.close());
    subscription_ = null;
    restartTimer = setTimeout(async () => {
      await closing?.catch(() => {});
      restartTimer = undefined;
      if (!stopped) subscribe();
    }, backoffMs);
    backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs * 2);
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      subscribe();
    },
    async check() {
      if (failing) throw new Error(failing);
    },
    async close() {
      stopped = true;
      clearTimeout(restartTimer);
      clearTimeout(healthyTimer);
      clearTimeout(quietTimer);
      const closing = (async () => {
        await subscription_?.close();
        await receiver?.close();
        await client.close();
      })();
      await Promise.race([closing.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 3000).unref?.())]);
    },
  };
}
