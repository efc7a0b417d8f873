/**
 * @lucius/worker's messages per second beside a bare SDK loop on the same broker (the dev broker
 * in its own process). Both take step messages from one subscription with peekLock at the same
 * concurrency, send one `succeeded` event per message to the events queue, and complete the
 * message; the library adds its parsing, span, timers and checks. Each round fills the
 * subscription with N messages first, then times from the consumer's start to the N-th event
 * accepted by the broker. Rounds alternate; the best of each is kept.
 *
 *   bun run bench:worker [--messages 2000] [--concurrency 8] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { ServiceBusClient, type ServiceBusReceivedMessage } from "@azure/service-bus";
import { createWorker } from "@lucius/worker";
import { startBrokerProcess } from "./support/service-process.ts";

const { values } = parseArgs({
  options: { messages: { type: "string", default: "2000" }, concurrency: { type: "string", default: "8" }, rounds: { type: "string", default: "3" } },
});
const messages = Number(values.messages);
const concurrency = Number(values.concurrency);
const TOPIC = "ocr-requests";
const EVENTS = "step-events";

const broker = await startBrokerProcess();
const client = new ServiceBusClient(broker.connection);

async function fill(round: number): Promise<void> {
  const sender = client.createSender(TOPIC);
  for (let i = 0; i < messages; i += 100) {
    const batch = await sender.createMessageBatch();
    for (let j = i; j < Math.min(messages, i + 100); j++) {
      batch.tryAddMessage({
        messageId: `r${round}-job-${j}.s0.d0`,
        body: {
          jobId: `r${round}-job-${j}`,
          stepId: `r${round}-job-${j}.s0`,
          stepName: "ocr",
          stepIndex: 0,
          attempt: 1,
          requestType: "document.ocr",
          tenantId: "bench",
          correlationId: null,
          payload: { documentId: `d${j}` },
          results: {},
        },
        contentType: "application/json",
        replyTo: EVENTS,
      });
    }
    await sender.sendMessages(batch);
  }
  await sender.close();
}

async function untilEvents(target: number): Promise<void> {
  while ((await broker.count(EVENTS)) < target) await Bun.sleep(5);
}

/** The bare loop: what a worker author would write with the SDK alone. */
async function bare(): Promise<() => Promise<void>> {
  const receiver = client.createReceiver(TOPIC, "workers", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
  const sender = client.createSender(EVENTS);
  const subscription = receiver.subscribe(
    {
      async processMessage(message: ServiceBusReceivedMessage) {
        const body = message.body as { jobId: string; stepId: string; attempt: number };
        await sender.sendMessages({
          body: { jobId: body.jobId, stepId: body.stepId, attempt: body.attempt, eventId: `${message.messageId}:succeeded`, status: "succeeded", result: {} },
          contentType: "application/json",
        });
        await receiver.completeMessage(message);
      },
      async processError() {},
    },
    { autoCompleteMessages: false, maxConcurrentCalls: concurrency },
  );
  return async () => {
    await subscription.close();
    await receiver.close();
    await sender.close();
  };
}

async function library(): Promise<() => Promise<void>> {
  const worker = createWorker({
    connection: client,
    handlers: { [TOPIC]: async () => ({}) },
    concurrency,
    maxLockRenewalMs: 0,
    handleSignals: false,
    log: { info: () => {}, warn: () => {}, error: () => {} },
  });
  return () => worker.stop();
}

const consumers = { "bare SDK loop": bare, "@lucius/worker": library };
const best = new Map<string, number>();
let accepted = 0;
console.log(`worker: ${messages} messages per round, concurrency ${concurrency}, dev broker in its own process; Bun ${Bun.version}`);
for (let round = 0; round < Number(values.rounds); round++) {
  for (const [name, start] of Object.entries(consumers)) {
    await fill(round * 10 + Object.keys(consumers).indexOf(name));
    const startedAt = performance.now();
    const stop = await start();
    accepted += messages;
    await untilEvents(accepted);
    const perSecond = messages / ((performance.now() - startedAt) / 1000);
    await stop();
    console.log(`  round ${round + 1}  ${name.padEnd(16)} ${perSecond.toFixed(0).padStart(6)} messages/s`);
    best.set(name, Math.max(best.get(name) ?? 0, perSecond));
  }
}
const bareRate = best.get("bare SDK loop")!;
const libraryRate = best.get("@lucius/worker")!;
console.log(
  `\nbest: bare ${bareRate.toFixed(0)}/s, library ${libraryRate.toFixed(0)}/s; library / bare: ${(libraryRate / bareRate).toFixed(2)}   (target ≥ 0.8)`,
);
await client.close();
await broker.stop();
