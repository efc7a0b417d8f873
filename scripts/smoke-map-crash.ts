/**
 * A map step survives a SIGKILL mid-way: the service on `ledger` (or `table`, `--backend table`; Azurite) fans a 500-item list
 * out over the dev broker, 50 children at a time, to a worker in this process that answers over
 * HTTP; after 150 answers the service is killed with SIGKILL and started again on the same
 * tables. Passes when the job ends `succeeded` with every item's result, every child was
 * published under exactly one messageId (a repeated publish keeps it: the broker counts the
 * duplicates it dropped), and none is missing. Run by .ci/run; exits 1 naming what failed.
 *
 *   bun scripts/smoke-map-crash.ts [--items 500] [--kill-after 150] [--backend ledger|table]
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { ServiceBusReceivedMessage } from "@azure/service-bus";
import { azurite, freshTables } from "../dev/azurite.ts";
import { startBroker } from "../dev/service-bus.ts";

const { values } = parseArgs({
  options: { items: { type: "string", default: "500" }, "kill-after": { type: "string", default: "150" }, backend: { type: "string", default: "ledger" } },
});
if (values.backend !== "ledger" && values.backend !== "table") {
  console.error("map crash smoke: --backend is ledger or table");
  process.exit(2);
}
const ITEMS = Number(values.items);
const KILL_AFTER = Number(values["kill-after"]);
const root = resolve(import.meta.dir, "..");

function fail(reason: string): never {
  console.error(`map crash smoke: FAILED: ${reason}`);
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), "lucius-map-crash-"));
const protocolsFile = join(dir, "protocols.json");
writeFileSync(
  protocolsFile,
  JSON.stringify({
    protocols: [
      {
        requestType: "document.fanout",
        version: 1,
        steps: [
          {
            name: "ocr",
            topic: "fanout",
            payloadSchema: { type: "object" },
            map: { items: "/payload/pages", maxConcurrency: 50, maxItems: 1000 },
            timeoutSeconds: 0,
          },
          { name: "merge", topic: "fanout-merge", payloadSchema: { type: "object" }, timeoutSeconds: 0 },
        ],
      },
    ],
  }),
);

const bus = await startBroker({ topics: { fanout: ["workers"], "fanout-merge": ["workers"] } });
const { connection } = await azurite();
const tables = freshTables();
const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const port = probe.port;
probe.stop(true);
const base = `http://127.0.0.1:${port}`;
const env = {
  PATH: process.env.PATH ?? "",
  HOME: process.env.HOME ?? "/tmp",
  LUCIUS_HOST: "127.0.0.1",
  LUCIUS_PORT: String(port),
  LUCIUS_LOG_LEVEL: "warn",
  LUCIUS_STORAGE_BACKEND: values.backend,
  LUCIUS_TABLE_CONNECTION: connection,
  ...(values.backend === "ledger"
    ? { LUCIUS_LEDGER_TABLE: tables.ledger }
    : { LUCIUS_JOBS_TABLE: tables.jobs, LUCIUS_STEPS_TABLE: tables.steps, LUCIUS_OUTBOX_TABLE: tables.outbox }),
  LUCIUS_IDEMPOTENCY_TABLE: tables.idempotency,
  LUCIUS_JOB_INDEX_TABLE: tables.jobIndex,
  LUCIUS_PROTOCOLS_FILE: protocolsFile,
  LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
  LUCIUS_OUTBOX_RETRY_DELAY: "2",
  LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
};

function startService() {
  return Bun.spawn(["bun", resolve(root, "src/main.ts")], { cwd: root, env, stdout: "ignore", stderr: "inherit" });
}

async function until<T>(probeFn: () => Promise<T | undefined>, what: string, timeoutMs = 120_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probeFn().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) fail(`${what} within ${timeoutMs / 1000} s`);
    await Bun.sleep(100);
  }
}

let service = startService();
await until(async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), "the service answering");

const pages = Array.from({ length: ITEMS }, (_, i) => ({ page: i + 1 }));
const accepted = await fetch(`${base}/v1/commands`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ requestType: "document.fanout", tenantId: "smoke", payload: { pages } }),
});
if (accepted.status !== 202) fail(`the command was answered ${accepted.status}: ${await accepted.text()}`);
const { jobId } = (await accepted.json()) as { jobId: string };
console.log(`map crash smoke: job ${jobId} accepted with ${ITEMS} items on ${values.backend}`);

/** The worker: answers each child over HTTP (retrying while the service is down), then completes the message. */
let answered = 0;
let killed = false;
const receiver = bus.client.createReceiver("fanout", "workers", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
const subscription = receiver.subscribe(
  {
    async processMessage(message: ServiceBusReceivedMessage) {
      const body = message.body as { jobId: string; stepId: string; itemIndex: number; attempt: number };
      for (;;) {
        const response = await fetch(`${base}/v1/jobs/${body.jobId}/steps/${body.stepId}/events`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            eventId: `${message.messageId}-done`,
            status: "succeeded",
            attempt: body.attempt,
            result: { text: `page ${body.itemIndex + 1}` },
          }),
        }).catch(() => null);
        // 409: the event lost a race for the map step's row too often; a worker tries again.
        if (response && response.status < 500 && response.status !== 409) {
          if (response.status !== 202) fail(`an event was answered ${response.status}: ${await response.text()}`);
          break;
        }
        await Bun.sleep(100);
      }
      await receiver.completeMessage(message);
      answered++;
      if (answered === KILL_AFTER && !killed) {
        killed = true;
        service.kill("SIGKILL");
        await service.exited;
        service = startService();
      }
    },
    async processError() {},
  },
  { autoCompleteMessages: false, maxConcurrentCalls: 16 },
);

const progress = setInterval(() => {
  console.log(`map crash smoke: ${answered} answered, ${bus.broker.accepted("fanout").length} children published${killed ? ", restarted" : ""}`);
}, 5000);
const merge = await until(async () => {
  const messages = bus.broker.accepted("fanout-merge");
  return messages.length > 0 ? messages : undefined;
}, "the merge step dispatched");
clearInterval(progress);
await subscription.close();
await receiver.close();

const view = (await (await fetch(`${base}/v1/jobs/${jobId}`)).json()) as {
  steps: { name: string; status: string; result: { items: unknown[]; failed: number[] } }[];
};
const ocr = view.steps.find((s) => s.name === "ocr")!;
const children = bus.broker.accepted("fanout").map((m) => String(m.message_id));
const idsByChild = new Map<string, Set<string>>();
for (const id of children) {
  const child = id.replace(/\.d\d+$/, "");
  idsByChild.set(child, (idsByChild.get(child) ?? new Set()).add(id));
}
service.kill("SIGTERM");
await service.exited;
await bus.stop();

if (!killed) fail(`the service was never killed (${answered} answers)`);
if (ocr.status !== "succeeded") fail(`the map step is ${ocr.status}`);
if (ocr.result.items.length !== ITEMS || ocr.result.items.some((item, i) => JSON.stringify(item) !== JSON.stringify({ text: `page ${i + 1}` }))) {
  fail("the map's result does not hold every item's result in order");
}
if (idsByChild.size !== ITEMS) fail(`${idsByChild.size} children were published, not ${ITEMS}`);
const twice = [...idsByChild].filter(([, ids]) => ids.size > 1);
if (twice.length > 0) fail(`${twice.length} children were published under two messageIds, e.g. ${[...twice[0]![1]].join(", ")}`);
console.log(
  `map crash smoke: ${ITEMS} items, SIGKILL after ${KILL_AFTER} answers and a restart: every child published under one messageId ` +
    `(${bus.broker.duplicates("fanout")} repeated publishes dropped by the broker as duplicates), merge dispatched ${merge.length} time(s), result in order`,
);
console.log("map crash smoke: passed");
process.exit(0);
