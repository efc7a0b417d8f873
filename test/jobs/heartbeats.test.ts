/**
 * Heartbeats, on every backend at once, through the dev broker: a worker that reports progress
 * more often than its step's heartbeatSeconds keeps a long attempt alive; one that goes quiet has
 * its attempt ended early (`heartbeat-missed`), retried, then failed; a late event of the missed
 * attempt is ignored. Map children heartbeat on their own.
 */
import { describe, expect, test } from "bun:test";
import { acceptedBody } from "../../dev/dev-broker.ts";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { type Backend, storeFor } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("heartbeats");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const { protocols } = writeProtocols(dir, [
  {
    requestType: "document.long",
    version: 1,
    steps: [
      { name: "ocr", topic: "ocr", payloadSchema: { type: "object" }, timeoutSeconds: 60, heartbeatSeconds: 1, maxAttempts: 2 },
      { name: "store", topic: "store", payloadSchema: { type: "object" } },
    ],
  },
]);
const BACKENDS: Backend[] = ["memory", "table", "ledger"];

interface Message {
  jobId: string;
  stepId: string;
  attempt: number;
  heartbeatSeconds?: number;
}

async function setup(backend: Backend) {
  const bus = await startBroker({ topics: { ocr: ["workers"], store: ["workers"] } });
  cleanups.push(() => bus.stop());
  const service = await startTestRuntime({
    store: await storeFor(backend),
    protocols,
    publisherFromSettings: true,
    env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_OUTBOX_RETRY_INTERVAL: "0.2", LUCIUS_OUTBOX_RETRY_DELAY: "3" },
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  const response = await service.postCommand({ requestType: "document.long", tenantId: "acme", payload: {} });
  const { jobId } = (await response.json()) as { jobId: string };
  const sent = (topic: string) =>
    bus.broker
      .accepted(topic)
      .map((m) => acceptedBody<Message>(m))
      .filter((m) => m.jobId === jobId);
  const sentAtLeast = async (topic: string, count: number, timeoutMs = 10_000) => {
    await eventually(() => sent(topic).length >= count, { timeoutMs, what: `${count} message(s) on ${topic} (${backend})` });
    return sent(topic);
  };
  const report = async (event: Record<string, unknown>) => {
    const answer = await service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: crypto.randomUUID(), ...event }),
    });
    return (await answer.json()) as { outcome: string; jobStatus: string; reason?: string };
  };
  const view = async () =>
    (await (await service.request(`/v1/jobs/${jobId}`)).json()) as {
      status: string;
      steps: { status: string; attempts: number; error: { code: string } | null }[];
    };
  return { sent, sentAtLeast, report, view };
}

describe("heartbeats, on every backend at once", () => {
  test("a worker reporting progress every 0.3 s keeps a 1 s heartbeat alive for 3 s and succeeds", async () => {
    await Promise.all(
      BACKENDS.map(async (backend) => {
        const { sentAtLeast, report, view } = await setup(backend);
        const [message] = await sentAtLeast("ocr", 1);
        expect(message!.heartbeatSeconds).toBe(1);
        for (const until = Date.now() + 3000; Date.now() < until; ) {
          expect((await report({ status: "progress", attempt: 1, percent: 10 })).outcome).toBe("applied");
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
        expect((await report({ status: "succeeded", attempt: 1 })).outcome).toBe("applied");
        await sentAtLeast("store", 1);
        expect((await view()).steps[0]).toMatchObject({ status: "succeeded", attempts: 1 });
      }),
    );
  }, 20_000);

  test("a worker that goes quiet misses its heartbeat: the step is dispatched again, then fails heartbeat-missed; a late event of the missed attempt is ignored", async () => {
    await Promise.all(
      BACKENDS.map(async (backend) => {
        const { sentAtLeast, report, view } = await setup(backend);
        await sentAtLeast("ocr", 1);
        const [, second] = await sentAtLeast("ocr", 2, 5000);
        expect(second!.attempt).toBe(2);
        expect((await report({ status: "progress", attempt: 1 })).outcome).toBe("ignored");
        await eventually(async () => (await view()).status === "failed", { timeoutMs: 5000, what: `the job failed (${backend})` });
        expect((await view()).steps[0]).toMatchObject({ status: "failed", attempts: 2, error: { code: "heartbeat-missed" } });
        expect((await report({ status: "succeeded", attempt: 2 })).outcome).toBe("ignored");
      }),
    );
  }, 20_000);
});
