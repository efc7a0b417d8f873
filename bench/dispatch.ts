/**
 * Drain 10,000 pending outbox entries through the dispatcher (publish in batches, then mark each
 * sent in the store) into the dev broker, beside the raw SDK sending the same messages in
 * batches of 100, in the same run. The broker runs in its own process.
 *
 *   bun run bench:dispatch [--entries 10000]
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ServiceBusClient } from "@azure/service-bus";
import { sampleJob, storeJob } from "../dev/job-fixtures.ts";
import type { OutboxWork } from "../src/domain/model.ts";
import { silentLogger } from "../src/logging/logger.ts";
import { createDispatcher } from "../src/outbox/dispatcher.ts";
import { buildMessage } from "../src/outbox/message.ts";
import { createServiceBusPublisher, toServiceBusMessage } from "../src/outbox/service-bus-publisher.ts";
import { createMemoryStore } from "../src/storage/memory/memory-store.ts";

const { values } = parseArgs({ options: { entries: { type: "string", default: "10000" } } });
const entries = Number(values.entries);

async function startBrokerProcess() {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const proc = Bun.spawn(["bun", resolve(import.meta.dir, "../scripts/broker.ts"), "--port", String(port)], { stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("LUCIUS_SERVICEBUS_CONNECTION")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("broker exited");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const connection = /LUCIUS_SERVICEBUS_CONNECTION='([^']+)'/.exec(text)![1]!;
  return {
    connection,
    stop: async () => {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

async function pendingWork(count: number) {
  const store = createMemoryStore();
  const work: OutboxWork[] = [];
  for (let i = 0; i < count; i++) {
    const { job, steps, outbox } = await storeJob(
      store,
      sampleJob("bench", { payload: { documentId: `d${i}`, documentUri: "https://files.example/d.pdf", contentType: "application/pdf" } }),
    );
    work.push({ job, step: steps[0]!, entry: outbox[0]! });
  }
  return { store, work };
}

async function runDispatcher(connection: string): Promise<number> {
  const { store, work } = await pendingWork(entries);
  const publisher = createServiceBusPublisher({ connectionString: connection, readinessTopic: "ocr-requests", logger: silentLogger });
  await publisher.check(); // connection and link up before the clock starts, as for the raw run
  const dispatcher = createDispatcher({ store, publisher, logger: silentLogger, publishTimeoutSeconds: 30, retryDelaySeconds: 30, maxAttempts: 3 });
  const started = performance.now();
  dispatcher.dispatch(work);
  await dispatcher.drain();
  const seconds = (performance.now() - started) / 1000;
  const sent = (await Promise.all(work.map(async (w) => (await store.getJob(w.job.jobId))!.outbox[0]!.status))).filter((s) => s === "sent").length;
  await publisher.close();
  if (sent !== entries) throw new Error(`only ${sent} of ${entries} entries were marked sent`);
  return entries / seconds;
}

async function runRawSdk(connection: string, round: number): Promise<number> {
  const { work } = await pendingWork(entries);
  const messages = work.map((w) => ({ ...toServiceBusMessage(buildMessage(w.job, w.step, w.entry)), messageId: `${w.entry.outboxId}-raw${round}` }));
  const client = new ServiceBusClient(connection);
  const sender = client.createSender("ocr-requests");
  await sender.createMessageBatch(); // link up before the clock starts
  const started = performance.now();
  for (let i = 0; i < messages.length; i += 100) {
    const batch = await sender.createMessageBatch();
    for (const message of messages.slice(i, i + 100)) if (!batch.tryAddMessage(message)) throw new Error("batch full before 100 messages");
    await sender.sendMessages(batch);
  }
  const seconds = (performance.now() - started) / 1000;
  await client.close();
  return entries / seconds;
}

const broker = await startBrokerProcess();
try {
  console.log(`dispatch benchmark: ${entries} pending entries, dev broker in its own process, Bun ${Bun.version}`);
  const raw: number[] = [];
  const dispatched: number[] = [];
  for (let round = 0; round < 2; round++) {
    raw.push(await runRawSdk(broker.connection, round));
    dispatched.push(await runDispatcher(broker.connection));
  }
  const best = (xs: number[]) => Math.max(...xs);
  console.log(`  raw SDK, batches of 100           ${best(raw).toFixed(0).padStart(7)} messages/s  (runs: ${raw.map((x) => x.toFixed(0)).join(", ")})`);
  console.log(
    `  dispatcher (publish + mark sent)  ${best(dispatched).toFixed(0).padStart(7)} messages/s  (runs: ${dispatched.map((x) => x.toFixed(0)).join(", ")})`,
  );
  console.log(`  ratio dispatcher/raw: ${(best(dispatched) / best(raw)).toFixed(2)}`);
} finally {
  await broker.stop();
}
