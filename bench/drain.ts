/**
 * Recovery after a broker outage: the broker goes down, N commands are accepted (32 clients),
 * the broker comes back, and the clock runs until every message has reached it. Beside it, in
 * the same run and into the same broker (its own process): the SDK's own rate for N messages in
 * batches of 100 (the very messages the service would send for such commands), and the intake
 * rate of the same setup.
 *
 *   bun run bench:drain [--backend memory|ledger|both] [--memory-entries 20000] [--ledger-entries 2000]
 */
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { ServiceBusClient, type ServiceBusMessage } from "@azure/service-bus";
import { bundledRegistry } from "../src/config/protocols.ts";
import { newJobId } from "../src/domain/ids.ts";
import { planJob } from "../src/domain/plan-job.ts";
import { buildMessage } from "../src/outbox/message.ts";
import { toServiceBusMessage } from "../src/outbox/service-bus-publisher.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";
import { startBrokerProcess, startServiceProcess } from "./support/service-process.ts";

const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "both" },
    "memory-entries": { type: "string", default: "20000" },
    "ledger-entries": { type: "string", default: "2000" },
  },
});
const CLIENTS = 32;
const TOPIC = "ocr-requests";

const commandPayload = (i: number) => ({ documentId: `d${i}`, documentUri: "https://files.example/d.pdf", contentType: "application/pdf" });

type Broker = Awaited<ReturnType<typeof startBrokerProcess>>;

async function intake(urls: string[], count: number): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      const url = urls[client % urls.length];
      for (let i = next++; i < count; i = next++) {
        const response = await fetch(`${url}/v1/commands`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ requestType: "document.ocr", tenantId: "drain", payload: commandPayload(i) }),
        });
        if (response.status !== 202) throw new Error(`intake answered ${response.status}: ${await response.text()}`);
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

/**
 * The messages the service would publish for `count` commands like the intake's: built by the
 * service's own planJob, buildMessage and toServiceBusMessage, so that the SDK's baseline encodes
 * the same bodies and properties as the drain does (a tiny test body would flatter the baseline).
 */
function serviceMessages(count: number): ServiceBusMessage[] {
  const protocols = bundledRegistry();
  const protocol = protocols.get("document.ocr")!;
  const now = new Date();
  return Array.from({ length: count }, (_, i) => {
    const { job, steps, outbox } = planJob({
      jobId: newJobId(),
      command: { requestType: "document.ocr", tenantId: "drain", correlationId: null, idempotencyKey: null, payload: commandPayload(i) },
      protocol,
      traceparent: null,
      now,
      retryDelaySeconds: 1,
    });
    return toServiceBusMessage(buildMessage(job, steps[0]!, outbox[0]!));
  });
}

/** The SDK alone: `count` messages like the service's in batches of 100, link opened before the clock starts. */
async function sdkRate(connection: string, count: number): Promise<{ rate: number; bodyBytes: number }> {
  const client = new ServiceBusClient(connection);
  const sender = client.createSender(TOPIC);
  await sender.createMessageBatch();
  const messages = serviceMessages(count);
  const started = performance.now();
  for (let i = 0; i < count; i += 100) {
    const batch = await sender.createMessageBatch();
    for (let j = i; j < Math.min(count, i + 100); j++) {
      if (!batch.tryAddMessage(messages[j]!)) throw new Error("a message of the service does not fit a batch of 100");
    }
    await sender.sendMessages(batch);
  }
  const rate = count / ((performance.now() - started) / 1000);
  await client.close();
  return { rate, bodyBytes: JSON.stringify(messages[0]!.body).length };
}

/** Broker down, `count` commands in, broker up: seconds until the broker has them all. */
async function drain(broker: Broker, env: Record<string, string>, instances: number, count: number) {
  const before = await broker.count(TOPIC);
  await broker.down();
  const services = await Promise.all(
    Array.from({ length: instances }, () =>
      startServiceProcess({
        ...env,
        LUCIUS_SERVICEBUS_CONNECTION: broker.connection,
        LUCIUS_OUTBOX_RETRY_DELAY: "1",
        ...(process.env.DRAIN_INTERVAL ? { LUCIUS_OUTBOX_RETRY_INTERVAL: process.env.DRAIN_INTERVAL } : {}),
      }),
    ),
  );
  // Stopped whatever happens: a failed run must not leave services behind (they keep the bench alive).
  try {
    const intakeRate = await intake(
      services.map((s) => s.url),
      count,
    );
    await broker.up();
    const started = performance.now();
    let delivered = 0;
    let firstSeconds: number | null = null;
    const timeline: string[] = [];
    for (const deadline = Date.now() + 600_000; delivered < count; ) {
      if (Date.now() > deadline) throw new Error(`only ${delivered} of ${count} delivered after 10 minutes`);
      await Bun.sleep(20);
      delivered = (await broker.count(TOPIC)) - before;
      const at = (performance.now() - started) / 1000;
      if (delivered > 0 && firstSeconds === null) firstSeconds = at;
      if (timeline.length === 0 || Number(timeline.at(-1)!.split("s:")[0]) + 1 <= at) timeline.push(`${at.toFixed(1)}s:${delivered}`);
    }
    const seconds = (performance.now() - started) / 1000;
    if (process.env.DRAIN_TIMELINE) console.log(`  first message after ${firstSeconds?.toFixed(2)} s; delivered over time: ${timeline.join(" ")}`);
    return { drainRate: count / seconds, seconds, intakeRate };
  } finally {
    await Promise.all(services.map((s) => s.stop()));
  }
}

const f = (n: number) => n.toFixed(0).padStart(6);
const broker = await startBrokerProcess();
try {
  console.log(`drain benchmark: broker (own process) down while commands arrive from ${CLIENTS} clients, then up; Bun ${Bun.version}`);
  if (values.backend !== "ledger") {
    const n = Number(values["memory-entries"]);
    const sdk = await sdkRate(broker.connection, n);
    const r = await drain(broker, { LUCIUS_STORAGE_BACKEND: "memory", LUCIUS_MEMORY_MAX_JOBS: String(Math.max(25_000, n)) }, 1, n);
    console.log(
      `memory, ${n} entries: drained in ${r.seconds.toFixed(1)} s = ${f(r.drainRate)} entries/s; SDK batches of the same messages (${sdk.bodyBytes}-byte bodies) ${f(sdk.rate)} msg/s; ratio ${(r.drainRate / sdk.rate).toFixed(3)} (intake ${f(r.intakeRate)} cmd/s)`,
    );
  }
  if (values.backend !== "memory") {
    const n = Number(values["ledger-entries"]);
    const azurite = await startAzuriteProcess();
    try {
      const results = [];
      for (const instances of [1, 3]) {
        const prefix = `d${randomBytes(4).toString("hex")}`;
        const env = {
          LUCIUS_STORAGE_BACKEND: "ledger",
          LUCIUS_TABLE_CONNECTION: azurite.connection,
          LUCIUS_LEDGER_TABLE: `${prefix}Ledger`,
          LUCIUS_IDEMPOTENCY_TABLE: `${prefix}Idem`,
          LUCIUS_JOB_INDEX_TABLE: `${prefix}Index`,
        };
        const r = await drain(broker, env, instances, n);
        results.push(r);
        console.log(
          `ledger (Azurite), ${n} entries, ${instances} instance(s): drained in ${r.seconds.toFixed(1)} s = ${f(r.drainRate)} entries/s; intake ${f(r.intakeRate)} cmd/s; drain/intake ${(r.drainRate / r.intakeRate).toFixed(2)}`,
        );
      }
      console.log(`ledger: 3 instances drain ${(results[1]!.drainRate / results[0]!.drainRate).toFixed(2)} × as fast as one`);
    } finally {
      await azurite.stop();
    }
  }
} finally {
  await broker.stop();
}
