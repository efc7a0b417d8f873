/**
 * Webhook deliveries per second to a local receiver, beside a bare fetch loop posting the same
 * bodies to the same receiver with the same concurrency (the baseline: what HTTP alone costs).
 * The service runs in this process on `memory` with the dev broker; N jobs with a callback fail
 * at once, and the time runs from the first failure to the last delivery received.
 *
 *   bun run bench:webhooks [--jobs 2000]
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startTestRuntime } from "../dev/in-process-runtime.ts";
import { startBroker } from "../dev/service-bus.ts";
import { loadProtocolFile } from "../src/config/protocols.ts";

const { values } = parseArgs({ options: { jobs: { type: "string", default: "2000" } } });
const JOBS = Number(values.jobs);
/** The webhook sender's concurrency per batch (src/outbox/webhook-sender.ts). */
const CONCURRENCY = 16;

const dir = mkdtempSync(join(tmpdir(), "lucius-bench-webhooks-"));
const secretsFile = join(dir, "secrets.json");
writeFileSync(secretsFile, JSON.stringify({ "*": [`whsec_${Buffer.from("a bench secret of thirty-two b!!").toString("base64")}`] }));
const protocolsFile = join(dir, "protocols.json");
writeFileSync(
  protocolsFile,
  JSON.stringify({ protocols: [{ requestType: "bench.hook", version: 1, steps: [{ name: "only", topic: "only", payloadSchema: { type: "object" } }] }] }),
);

let received = 0;
let lastAt = 0;
const receiver = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(request) {
    await request.text();
    received++;
    lastAt = performance.now();
    return new Response(null, { status: 204 });
  },
});
const url = `http://127.0.0.1:${receiver.port}/hooks`;

// Baseline: the same number of signed-size bodies posted by a bare loop, CONCURRENCY at a time.
const body = JSON.stringify({ type: "job.failed", timestamp: new Date().toISOString(), data: { jobId: crypto.randomUUID(), status: "failed", seq: 2 } });
let started = performance.now();
for (let i = 0; i < JOBS; i += CONCURRENCY) {
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, JOBS - i) }, () => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body })),
  );
}
const bareSeconds = (performance.now() - started) / 1000;
received = 0;

const bus = await startBroker({ topics: { only: ["workers"] } });
const service = await startTestRuntime({
  protocols: loadProtocolFile(protocolsFile, 0),
  publisherFromSettings: true,
  env: {
    LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
    LUCIUS_WEBHOOK_SECRETS_FILE: secretsFile,
    LUCIUS_WEBHOOK_ALLOW_HTTP: "true",
    LUCIUS_WEBHOOK_ALLOW_HOSTS: "127.0.0.1",
    LUCIUS_MEMORY_MAX_JOBS: String(JOBS * 2),
  },
});
service.runtime.start();
const jobs: string[] = [];
for (let i = 0; i < JOBS; i += 50) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(50, JOBS - i) }, async () => {
      const response = await service.postCommand({ requestType: "bench.hook", tenantId: "bench", payload: {}, callback: { url } });
      return ((await response.json()) as { jobId: string }).jobId;
    }),
  );
  jobs.push(...batch);
}
started = performance.now();
for (let i = 0; i < JOBS; i += 50) {
  await Promise.all(
    jobs.slice(i, i + 50).map((jobId) =>
      service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ eventId: "f", status: "failed", error: { code: "x", message: "" } }),
      }),
    ),
  );
}
for (const deadline = Date.now() + 120_000; received < JOBS && Date.now() < deadline; ) await Bun.sleep(20);
const serviceSeconds = (lastAt - started) / 1000;
await service.runtime.stop();
await bus.stop();
receiver.stop(true);

console.log(`${JOBS} deliveries (${received} received), ${CONCURRENCY} at a time`);
console.log(`bare fetch loop           ${(JOBS / bareSeconds).toFixed(0).padStart(6)} /s`);
console.log(
  `service webhooks          ${(JOBS / serviceSeconds).toFixed(0).padStart(6)} /s  (from the first failure event to the last delivery; includes the events)`,
);
console.log(`ratio service / bare      ${(bareSeconds / serviceSeconds).toFixed(2)}`);
process.exit(0);
