/**
 * Publishes outbox messages to Azure Service Bus with the official SDK: one client, one cached
 * sender per topic, batches sized by the link (createMessageBatch / tryAddMessage), errors
 * classified retryable or not (see PublishError).
 */
import { isServiceBusError, ServiceBusClient, type ServiceBusMessage, type ServiceBusMessageBatch, type ServiceBusSender } from "@azure/service-bus";
import type { Logger } from "../logging/logger.ts";
import { type OutboundMessage, PublishError, type Publisher, type PublishOutcome } from "./publisher.ts";

export interface ServiceBusPublisherOptions {
  connectionString: string;
  /** A topic /readyz may open a link to, to prove the namespace answers. */
  readinessTopic: string | null;
  logger: Logger;
  /** Per-operation timeout of the SDK; the dispatcher bounds each publish as a whole. */
  operationTimeoutMs?: number;
  /** How long close() waits for a broker that does not answer (default 3 s). */
  closeTimeoutMs?: number;
}

const DEFAULT_CLOSE_TIMEOUT_MS = 3000;

/** Codes that no retry can fix: the entry fails at once with the reason. */
const PERMANENT = new Set(["MessagingEntityNotFound", "MessagingEntityDisabled", "UnauthorizedAccess", "MessageSizeExceeded", "QuotaExceeded"]);

function classify(error: unknown): PublishError {
  if (error instanceof PublishError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (isServiceBusError(error)) {
    return new PublishError(`${error.code}: ${message}`, !PERMANENT.has(error.code), { cause: error });
  }
  // Aborts (our timeout), connection errors and anything unknown: worth another attempt.
  return new PublishError(message, true, { cause: error });
}

export function toServiceBusMessage(message: OutboundMessage): ServiceBusMessage {
  return {
    messageId: message.messageId,
    body: message.body,
    contentType: message.contentType,
    subject: message.subject,
    correlationId: message.correlationId,
    partitionKey: message.partitionKey,
    applicationProperties: message.applicationProperties,
    ...(message.replyTo ? { replyTo: message.replyTo } : {}),
  };
}

export function createServiceBusPublisher(options: ServiceBusPublisherOptions): Publisher {
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  const client = new ServiceBusClient(options.connectionString, {
    // Few, quick SDK retries: the outbox retries with backoff and never loses the entry.
    retryOptions: { maxRetries: 1, retryDelayInMs: 100, timeoutInMs: options.operationTimeoutMs ?? 5000 },
  });
  const senders = new Map<string, ServiceBusSender>();
  const senderFor = (topic: string) => {
    let sender = senders.get(topic);
    if (!sender) {
      sender = client.createSender(topic);
      senders.set(topic, sender);
    }
    return sender;
  };

  /** Sends one batch; marks its messages' outcomes. A failed send fails only its own messages. */
  async function sendBatch(
    sender: ServiceBusSender,
    batch: ServiceBusMessageBatch,
    indexes: number[],
    outcomes: PublishOutcome[],
    signal: AbortSignal,
  ): Promise<void> {
    if (indexes.length === 0) return;
    try {
      await sender.sendMessages(batch, { abortSignal: signal });
      for (const i of indexes) outcomes[i] = { ok: true };
    } catch (error) {
      const failure = classify(error);
      // A dropped link is cached no more: the next publish opens a fresh one.
      if (failure.retryable && senders.get(sender.entityPath) === sender) {
        senders.delete(sender.entityPath);
        void sender.close().catch(() => {});
      }
      for (const i of indexes) outcomes[i] = { ok: false, error: failure.message, retryable: failure.retryable };
    }
  }

  return {
    async publish(topic, messages, signal) {
      const sender = senderFor(topic);
      const outcomes: PublishOutcome[] = new Array(messages.length);
      let batch: ServiceBusMessageBatch;
      try {
        batch = await sender.createMessageBatch({ abortSignal: signal });
      } catch (error) {
        throw classify(error);
      }
      let inBatch: number[] = [];
      for (let i = 0; i < messages.length; i++) {
        const message = toServiceBusMessage(messages[i]!);
        if (batch.tryAddMessage(message)) {
          inBatch.push(i);
          continue;
        }
        if (inBatch.length > 0) {
          await sendBatch(sender, batch, inBatch, outcomes, signal);
          batch = await sender.createMessageBatch({ abortSignal: signal }).catch((error: unknown) => {
            throw classify(error);
          });
          inBatch = [];
          if (batch.tryAddMessage(message)) {
            inBatch.push(i);
            continue;
          }
        }
        // Alone in an empty batch and still too large: this message can never be sent.
        outcomes[i] = {
          ok: false,
          error: `MessageSizeExceeded: message ${message.messageId} exceeds the link's limit of ${batch.maxSizeInBytes} bytes`,
          retryable: false,
        };
      }
      await sendBatch(sender, batch, inBatch, outcomes, signal);
      return outcomes;
    },

    async check() {
      if (options.readinessTopic === null) return;
      // Opening a fresh link proves the connection, the credentials and the entity; a cached one
      // may outlive a dropped connection until its next send.
      const sender = client.createSender(options.readinessTopic);
      try {
        const batch = await sender.createMessageBatch({ abortSignal: AbortSignal.timeout(2000) });
        if (batch.maxSizeInBytes <= 0) throw new Error("the broker announced no message size");
      } finally {
        void sender.close().catch(() => {});
      }
    },

    async close() {
      const closing = (async () => {
        await Promise.allSettled([...senders.values()].map((sender) => sender.close()));
        senders.clear();
        await client.close();
      })();
      // A broker that went away never answers the close handshake: shutdown must not wait for it.
      const gaveUp = await Promise.race([
        closing.then(
          () => false,
          (error: unknown) => {
            options.logger.warn({ err: error }, "closing the Service Bus client failed");
            return false;
          },
        ),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(true), closeTimeoutMs).unref?.()),
      ]);
      if (gaveUp) options.logger.warn(`the Service Bus client did not close within ${closeTimeoutMs} ms; leaving it`);
    },
  };
}
