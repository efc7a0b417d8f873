/**
 * 1,000 three-step jobs end to end on the `ledger` backend: HTTP intake → the service publishes
 * to the dev broker → worker stubs (real SDK) answer each step on replyTo → the service applies
 * the events → job succeeded. Azurite, the broker and the service each run in their own process.
 *
 *   bun run bench:pipeline [--jobs 1000] [--concurrency 32]
 *   BACKEND=memory|table EVENTS_CONCURRENCY=4 bun run bench:pipeline   (another backend; the events receiver's concurrency)
 *   EVENTS=http bun run bench:pipeline   (the worker stubs answer over HTTP instead of Service Bus)
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ServiceBusClient } from "@azure/service-bus";
import { freshTables } from "../dev/azurite.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";

const { values } = parseArgs({ options: { jobs: { type: "string", default: "1000" }, concurrency: { type: "string", default: "32" } } });
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
const root = resolve(import.meta.dir, "..");

async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function waitFor(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await fetch(url);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url} did not answer`);
      await Bun.sleep(50);
    }
  }
}

const azurite = await startAzuriteProcess();
const brokerPort = await freePort();
const broker = Bun.spawn(["bun", resolve(root, "scripts/broker.ts"), "--port", String(brokerPort), "--queue", "step-events"], {
  stdout: "ignore",
  stderr: "inherit",
});
const busConnection = `Endpoint=sb://127.0.0.1:${brokerPort};SharedAccessKeyName=dev;SharedAccessKey=dev;UseDevelopmentEmulator=true;`;
const servicePort = await freePort();
const tables = freshTables();
const serviceEnv: Record<string, string> = {
  PATH: process.env.PATH ?? "",
  NODE_ENV: "production",
  LUCIUS_HOST: "127.0.0.1",
  LUCIUS_PORT: String(servicePort),
  LUCIUS_LOG_LEVEL: "warn",
  LUCIUS_STORAGE_BACKEND: process.env.BACKEND ?? "ledger", // BACKEND=memory|table to compare
  LUCIUS_TABLE_CONNECTION: azurite.connection,
  LUCIUS_LEDGER_TABLE: tables.ledger,
  LUCIUS_IDEMPOTENCY_TABLE: tables.idempotency,
  LUCIUS_JOB_INDEX_TABLE: tables.jobIndex,
  LUCIUS_SERVICEBUS_CONNECTION: busConnection,
  ...(process.env.EVENTS === "http" ? {} : { LUCIUS_EVENTS_ENTITY: "step-events" }),
  // EVENTS_CONCURRENCY=n: the receiver's concurrency (LUCIUS_EVENTS_CONCURRENCY), to compare.
  ...(process.env.EVENTS_CONCURRENCY ? { LUCIUS_EVENTS_CONCURRENCY: process.env.EVENTS_CONCURRENCY } : {}),
};
const service = Bun.spawn(["bun", resolve(root, "src/main.ts")], {
  env: serviceEnv,
  stdout: "ignore",
  stderr: "inherit",
});
const base = `http://127.0.0.1:${servicePort}`;

/** N commands from `concurrency` submitters against `url`; resolves with their rate. */
async function submitAll(url: string, count: number, tenantId: string, onAccepted?: (jobId: string, i: number) => void): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const response = await fetch(`${url}/v1/commands`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": `${tenantId}-${i}` },
          body: JSON.stringify({
            requestType: "document.ingest",
            tenantId,
            payload: { documentId: `d${i}`, documentUri: "https://files.example/d.pdf", contentType: "application/pdf" },
          }),
        });
        if (response.status !== 202) throw new Error(`intake answered ${response.status}: ${await response.text()}`);
        onAccepted?.(((await response.json()) as { jobId: string }).jobId, i);
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}
const client = new ServiceBusClient(busConnection);

try {
  await waitFor(`${base}/healthz`);
  const submitted = new Map<string, number>();
  const events = client.createSender("step-events");

  let lastAnswers = 0;
  const workers = ["ocr-requests", "vector-ingestion", "semantic-intelligence"].map((topic, index) => {
    const receiver = client.createReceiver(topic, "workers", { receiveMode: "receiveAndDelete" });
    const subscription = receiver.subscribe(
      {
        async processMessage(message) {
          const body = message.body as { jobId: string; stepId: string };
          const event = { eventId: `${message.messageId}-ok`, status: "succeeded", result: { step: index } };
          if (process.env.EVENTS === "http") {
            const answer = await fetch(`${base}/v1/jobs/${body.jobId}/steps/${body.stepId}/events`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify(event),
            });
            if (answer.status !== 202) throw new Error(`an event was answered ${answer.status}`);
          } else {
            await events.sendMessages({ body: { jobId: body.jobId, stepId: body.stepId, ...event } });
          }
          if (index === 2) lastAnswers++;
        },
        async processError() {},
      },
      { maxConcurrentCalls: 16 },
    );
    return { receiver, subscription };
  });

  console.log(
    `pipeline benchmark: ${jobs} document.ingest jobs (3 steps), ${process.env.BACKEND ?? "ledger"}, dev broker, ${concurrency} concurrent submitters, events over ${process.env.EVENTS === "http" ? "HTTP" : `Service Bus (concurrency ${process.env.EVENTS_CONCURRENCY ?? "default"})`}, Bun ${Bun.version}`,
  );
  await submitAll(base, jobs, "bench", (jobId, i) => submitted.set(jobId, i));
  // Job timings come from the service's own timestamps (createdAt → updatedAt of the final
  // state), so that measuring does not load the store while the jobs run.
  const deadline = Date.now() + 300_000;
  while (lastAnswers < jobs) {
    if (Date.now() > deadline) throw new Error(`only ${lastAnswers} of ${jobs} last steps answered within 5 minutes`);
    await Bun.sleep(100);
  }
  const views = new Map<string, { status: string; createdAt: string; updatedAt: string }>();
  while (views.size < jobs) {
    if (Date.now() > deadline) throw new Error(`only ${views.size} of ${jobs} jobs succeeded within 5 minutes`);
    const open = [...submitted.keys()].filter((id) => !views.has(id));
    for (let i = 0; i < open.length; i += 50) {
      await Promise.all(
        open.slice(i, i + 50).map(async (id) => {
          const view = (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as { status: string; createdAt: string; updatedAt: string };
          if (view.status === "succeeded") views.set(id, view);
        }),
      );
    }
    if (views.size < jobs) await Bun.sleep(200);
  }
  const created = [...views.values()].map((v) => Date.parse(v.createdAt));
  const ended = [...views.values()].map((v) => Date.parse(v.updatedAt));
  const seconds = (Math.max(...ended) - Math.min(...created)) / 1000;
  const latencies = [...views.values()].map((v) => Date.parse(v.updatedAt) - Date.parse(v.createdAt)).sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
  console.log(`  ${jobs} jobs succeeded within ${seconds.toFixed(1)} s (first accepted → last succeeded): ${(jobs / seconds).toFixed(1)} jobs/s`);
  // The intake alone, on the same emulator: a service without a broker, the same commands.
  const intakePort = await freePort();
  const intake = Bun.spawn(["bun", resolve(root, "src/main.ts")], {
    env: { ...serviceEnv, LUCIUS_PORT: String(intakePort), LUCIUS_SERVICEBUS_CONNECTION: "", LUCIUS_EVENTS_ENTITY: "" },
    stdout: "ignore",
    stderr: "inherit",
  });
  await waitFor(`http://127.0.0.1:${intakePort}/healthz`);
  const intakeRate = await submitAll(`http://127.0.0.1:${intakePort}`, jobs, "intake-only");
  intake.kill("SIGTERM");
  await intake.exited;
  console.log(
    `  intake alone (same emulator, no broker): ${intakeRate.toFixed(1)} commands/s; end to end / intake: ${(jobs / seconds / intakeRate).toFixed(2)}`,
  );
  console.log(`  job latency (accepted → succeeded): p50 ${pct(50).toFixed(0)} ms, p99 ${pct(99).toFixed(0)} ms, max ${latencies.at(-1)!.toFixed(0)} ms`);
  for (const worker of workers) {
    await worker.subscription.close();
    await worker.receiver.close();
  }
} finally {
  await client.close();
  service.kill("SIGTERM");
  broker.kill("SIGTERM");
  await Promise.all([service.exited, broker.exited]);
  await azurite.stop();
}
