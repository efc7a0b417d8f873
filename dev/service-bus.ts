/** Test helpers on the real @azure/service-bus client, against the dev broker. */
import { ServiceBusClient, type ServiceBusReceivedMessage } from "@azure/service-bus";
import { type DevBrokerOptions, startDevBroker } from "./dev-broker.ts";

/** The topics of the bundled protocols, each with a `workers` subscription. */
export const BUNDLED_TOPICS = Object.fromEntries(
  ["ocr-requests", "vector-ingestion", "semantic-intelligence", "document-split", "document-classify", "document-merge", "document-cleanup"].map((topic) => [
    topic,
    ["workers"],
  ]),
);

export async function startBroker(options: DevBrokerOptions = {}) {
  const broker = await startDevBroker({ topics: BUNDLED_TOPICS, ...options });
  const client = new ServiceBusClient(broker.connectionString, { retryOptions: { maxRetries: 0, timeoutInMs: 5000 } });
  return {
    broker,
    client,
    /** Receives (peekLock, then complete) until `count` messages came or the deadline passed. */
    async receive(topic: string, count: number, options: { subscription?: string; timeoutMs?: number } = {}): Promise<ServiceBusReceivedMessage[]> {
      const receiver = client.createReceiver(topic, options.subscription ?? "workers", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
      const received: ServiceBusReceivedMessage[] = [];
      const deadline = Date.now() + (options.timeoutMs ?? 5000);
      try {
        while (received.length < count && Date.now() < deadline) {
          const batch = await receiver.receiveMessages(Math.min(100, count - received.length), {
            maxWaitTimeInMs: Math.max(50, Math.min(500, deadline - Date.now())),
          });
          for (const message of batch) {
            await receiver.completeMessage(message);
            received.push(message);
          }
        }
      } finally {
        await receiver.close();
      }
      return received;
    },
    async stop() {
      await client.close();
      await broker.close();
    },
  };
}
