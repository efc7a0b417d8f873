/**
 * A worker to copy: takes Lucius's step messages from topic subscriptions with the official
 * Service Bus SDK and reports step events back to the entity the message names in `replyTo`.
 *
 *   LUCIUS_SERVICEBUS_CONNECTION='Endpoint=sb://…' bun examples/worker.ts [topic ...]
 *
 * Topics default to those of the bundled protocols; each is read through the subscription
 * WORKER_SUBSCRIPTION (default `workers`). The "work" here is a stand-in: it answers with a
 * small result per step. Replace `doStep` with yours.
 */
import { isServiceBusError, ServiceBusClient, type ServiceBusReceivedMessage, type ServiceBusReceiver, type ServiceBusSender } from "@azure/service-bus";

/** What Lucius puts in a step message's body (docs/API.md, "Messages to workers"). */
interface StepMessage {
  jobId: string;
  stepId: string;
  stepName: string;
  stepIndex: number;
  outboxId: string;
  /** The step's heartbeat interval, when it has one: report at least this often. */
  heartbeatSeconds?: number;
  /** Which dispatch of the step this is, from 1: echoed in the events. */
  attempt: number;
  requestType: string;
  tenantId: string;
  correlationId: string | null;
  payload: Record<string, unknown>;
  /** What the step's predecessors produced, by step name. */
  results: Record<string, Record<string, unknown>>;
  /** A map step's child: the item it works on, and where it sits in the list. */
  item?: unknown;
  itemIndex?: number;
  /** The compensation step's: which step failed the job, and how. */
  failure?: { step: string; error: { code: string; message: string } };
}

/** A failure the worker wants Lucius to know about: retryable ones get another directive. */
class StepFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** The work itself. Throw StepFailure for a failure to report; anything else is transient. */
async function doStep(message: StepMessage): Promise<Record<string, unknown>> {
  const { payload, stepName } = message;
  if (typeof payload.documentUri !== "string") throw new StepFailure("NO_DOCUMENT", "the payload has no documentUri", false);
  switch (stepName) {
    case "ocr":
      // document.pages maps ocr over the split's pages: one message per page, with its item.
      if (message.itemIndex !== undefined) return { page: message.item, text: `text of page ${message.itemIndex + 1} of ${payload.documentId}` };
      return { pages: 1, text: `text of ${payload.documentId}` };
    case "split":
      return { pages: Array.from({ length: 3 }, (_, i) => ({ page: i + 1 })) };
    case "classify":
      return { label: "letter", from: Object.keys(message.results) };
    case "merge":
      return { merged: Object.keys(message.results) };
    case "cleanup":
      return { cleaned: message.failure?.step ?? null };
    case "embed":
      // A later step reads what the earlier ones produced.
      return { vectors: 1, model: "example", from: Object.keys(message.results) };
    case "enrich":
      return { entities: [], language: payload.language ?? "und" };
    default:
      return { done: stepName };
  }
}

const DEFAULT_TOPICS = [
  "ocr-requests",
  "vector-ingestion",
  "semantic-intelligence",
  "document-split",
  "document-classify",
  "document-merge",
  "document-cleanup",
];

export interface WorkerOptions {
  connectionString: string;
  topics: string[];
  subscription: string;
  log?: (line: string) => void;
}

export function startWorker(options: WorkerOptions) {
  const log = options.log ?? ((line: string) => console.log(line));
  const client = new ServiceBusClient(options.connectionString);
  const senders = new Map<string, ServiceBusSender>();
  const receivers: ServiceBusReceiver[] = [];
  const subscriptions: { close(): Promise<void> }[] = [];

  const senderFor = (entity: string) => {
    let sender = senders.get(entity);
    if (!sender) {
      sender = client.createSender(entity);
      senders.set(entity, sender);
    }
    return sender;
  };

  /** A step event; its eventId is derived from the message, so a redelivery reports the same event. */
  async function report(message: ServiceBusReceivedMessage, body: StepMessage, event: Record<string, unknown> & { status: string }) {
    if (!message.replyTo) throw new StepFailure("NO_REPLY_TO", "the message names no events entity (LUCIUS_EVENTS_ENTITY unset)", false);
    await senderFor(message.replyTo).sendMessages({
      // `attempt` lets the service ignore this answer if the attempt timed out meanwhile.
      body: { jobId: body.jobId, stepId: body.stepId, attempt: body.attempt, eventId: `${message.messageId}:${event.status}`, ...event },
      contentType: "application/json",
      correlationId: body.jobId,
      // The trace goes on: the event hangs under the publish of the message it answers.
      ...(typeof message.applicationProperties?.traceparent === "string"
        ? { applicationProperties: { traceparent: message.applicationProperties.traceparent } }
        : {}),
    });
  }

  async function handle(message: ServiceBusReceivedMessage, receiver: ServiceBusReceiver): Promise<void> {
    const body = message.body as StepMessage;
    try {
      await report(message, body, { status: "progress", percent: 0, message: "started" });
      // With a heartbeat, a progress event at a third of the interval tells the service it is alive.
      let beats = 0;
      const beating = body.heartbeatSeconds
        ? setInterval(
            () => void report(message, body, { status: "progress", message: "alive", eventId: `${message.messageId}:beat:${++beats}` }).catch(() => {}),
            (body.heartbeatSeconds * 1000) / 3,
          )
        : undefined;
      const result = await doStep(body).finally(() => clearInterval(beating));
      await report(message, body, { status: "succeeded", result });
      log(`${body.stepName} of job ${body.jobId}: succeeded`);
    } catch (error) {
      if (!(error instanceof StepFailure)) {
        // Transient (the events entity did not answer, say): the message comes back later.
        log(`${body.stepName} of job ${body.jobId}: ${(error as Error).message}; abandoned for a later delivery`);
        await receiver.abandonMessage(message).catch(() => {});
        return;
      }
      await report(message, body, { status: "failed", error: { code: error.code, message: error.message, retryable: error.retryable } });
      log(`${body.stepName} of job ${body.jobId}: failed (${error.code})`);
    }
    // Completed only once the event is sent: a crash before this redelivers the message.
    await receiver.completeMessage(message);
  }

  for (const topic of options.topics) {
    const receiver = client.createReceiver(topic, options.subscription, { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
    receivers.push(receiver);
    subscriptions.push(
      receiver.subscribe(
        {
          processMessage: (message) => handle(message, receiver),
          processError: async ({ error }) => {
            log(`receiver of ${topic}: ${isServiceBusError(error) ? error.code : ""} ${error.message}`);
          },
        },
        { autoCompleteMessages: false, maxConcurrentCalls: 8 },
      ),
    );
  }
  log(`worker: taking ${options.topics.join(", ")} through subscription '${options.subscription}'`);

  return {
    /** Stops taking messages, lets running ones finish, closes the connection. */
    async stop() {
      await Promise.allSettled(subscriptions.map((s) => s.close()));
      await Promise.allSettled([...receivers, ...senders.values()].map((link) => link.close()));
      await client.close();
    },
  };
}

if (import.meta.main) {
  const connectionString = process.env.LUCIUS_SERVICEBUS_CONNECTION;
  if (!connectionString) {
    console.error("worker: set LUCIUS_SERVICEBUS_CONNECTION");
    process.exit(1);
  }
  const topics = process.argv.slice(2);
  const worker = startWorker({
    connectionString,
    topics: topics.length > 0 ? topics : DEFAULT_TOPICS,
    subscription: process.env.WORKER_SUBSCRIPTION ?? "workers",
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) process.exit(1);
    stopping = true;
    await worker.stop();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop());
  process.on("SIGTERM", () => void stop());
}
