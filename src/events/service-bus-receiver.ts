/**
 * Step events from Service Bus (LUCIUS_EVENTS_ENTITY): peekLock; complete once the event's
 * change is stored (or it changed nothing), abandon on a transient failure so it comes back,
 * dead-letter what can never be applied (malformed, unknown job or step) with the reason.
 */
import { ServiceBusClient, type ServiceBusReceivedMessage, type ServiceBusReceiver } from "@azure/service-bus";
import { Value } from "@sinclair/typebox/value";
import { DomainError, NotFoundError } from "../domain/errors.ts";
import type { StepEvent } from "../domain/step-events.ts";
import type { StepEventService } from "../jobs/step-events.ts";
import type { Logger } from "../logging/logger.ts";
import { StepEventMessage } from "../validation/step-event.ts";

export interface EventReceiverOptions {
  connectionString: string;
  /** A queue, or `topic/Subscriptions/name`. */
  entity: string;
  events: StepEventService;
  logger: Logger;
  maxConcurrentCalls?: number;
  /** Called after the store commit, before the message is completed: tests inject crashes here. */
  beforeComplete?: (eventId: string) => Promise<void> | void;
}

export interface EventReceiver {
  start(): void;
  close(): Promise<void>;
}

function decodeBody(body: unknown): unknown {
  if (body instanceof Uint8Array) return JSON.parse(new TextDecoder().decode(body));
  if (typeof body === "string") return JSON.parse(body);
  return body;
}

export function createEventReceiver(options: EventReceiverOptions): EventReceiver {
  const { logger } = options;
  const client = new ServiceBusClient(options.connectionString, { retryOptions: { maxRetries: 1, retryDelayInMs: 200 } });
  const [topic, , subscription] = options.entity.split("/");
  let receiver: ServiceBusReceiver | null = null;
  let subscription_: { close(): Promise<void> } | null = null;

  async function process(message: ServiceBusReceivedMessage, via: ServiceBusReceiver): Promise<void> {
    let parsed: unknown;
    try {
      parsed = decodeBody(message.body);
    } catch (error) {
      await via.deadLetterMessage(message, { deadLetterReason: "MalformedEvent", deadLetterErrorDescription: `not JSON: ${(error as Error).message}` });
      return;
    }
    if (!Value.Check(StepEventMessage, parsed)) {
      const problems = [...Value.Errors(StepEventMessage, parsed)].slice(0, 5).map((e) => `${e.path || "/"}: ${e.message}`);
      await via.deadLetterMessage(message, { deadLetterReason: "MalformedEvent", deadLetterErrorDescription: problems.join("; ") });
      logger.warn({ messageId: message.messageId, problems }, "dead-lettered a malformed step event");
      return;
    }
    const { jobId, stepId, ...event } = parsed;
    try {
      const result = await options.events.handle(jobId, stepId, event as StepEvent);
      await options.beforeComplete?.(event.eventId);
      await via.completeMessage(message);
      logger.info({ jobId, stepId, eventId: event.eventId, outcome: result.outcome }, "step event received");
    } catch (error) {
      if (error instanceof NotFoundError) {
        await via.deadLetterMessage(message, { deadLetterReason: "UnknownJobOrStep", deadLetterErrorDescription: error.message });
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

  return {
    start() {
      receiver = subscription
        ? client.createReceiver(topic!, subscription, { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 })
        : client.createReceiver(options.entity, { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
      const via = receiver;
      subscription_ = via.subscribe(
        {
          processMessage: (message) => process(message, via),
          processError: async ({ error }) => {
            logger.warn({ err: error, entity: options.entity }, "step event receiver error");
          },
        },
        { autoCompleteMessages: false, maxConcurrentCalls: options.maxConcurrentCalls ?? 4 },
      );
    },
    async close() {
      const closing = (async () => {
        await subscription_?.close();
        await receiver?.close();
        await client.close();
      })();
      await Promise.race([closing.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 3000).unref?.())]);
    },
  };
}
