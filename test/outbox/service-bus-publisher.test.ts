import { afterEach, describe, expect, test } from "bun:test";
import { eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { buildRegistry, type ProtocolRegistry } from "../../src/config/protocols.ts";
import { silentLogger } from "../../src/logging/logger.ts";
import { createDispatcher } from "../../src/outbox/dispatcher.ts";
import { createServiceBusPublisher } from "../../src/outbox/service-bus-publisher.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  // Last started, first stopped: the service before its broker.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function setup(brokerOptions: Parameters<typeof startBroker>[0] = {}, env: Record<string, string> = {}, protocols?: ProtocolRegistry) {
  const bus = await startBroker(brokerOptions);
  cleanups.push(() => bus.stop());
  const service = await startTestRuntime({
    env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, ...env },
    publisherFromSettings: true,
    ...(protocols ? { protocols } : {}),
  });
  cleanups.push(() => service.runtime.stop());
  return { ...bus, ...service };
}

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async function entryOf(
  runtime: { store: { getJob(id: string): Promise<{ outbox: { status: string; attempts: number; lastError: string | null }[] } | null> } },
  jobId: string,
) {
  return (await runtime.store.getJob(jobId))!.outbox[0]!;
}

/** The entry once its first publish attempt is recorded. */
function firstAttempt(runtime: Parameters<typeof entryOf>[0], jobId: string, timeoutMs: number) {
  return eventually(
    async () => {
      const current = await entryOf(runtime, jobId);
      return current.attempts === 1 && current;
    },
    { timeoutMs, what: "a recorded attempt" },
  );
}

describe("ServiceBusPublisher with the real SDK and the dev broker", () => {
  test("a command's message arrives on its step's topic subscription with every field of the contract", async () => {
    const { postCommand, receive, runtime } = await setup();
    const response = await postCommand(ingestCommand(), { traceparent: TRACEPARENT });
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    const [message] = await receive("ocr-requests", 1);
    const stored = (await runtime.store.getJob(jobId))!;
    const entry = stored.outbox[0]!;
    expect(message).toBeDefined();
    expect(message!.messageId).toBe(entry.outboxId);
    expect(message!.body).toEqual({
      jobId,
      stepId: stored.steps[0]!.stepId,
      stepName: "ocr",
      stepIndex: 0,
      outboxId: entry.outboxId,
      attempt: 1,
      // The step's timeout (the bundled protocol's 3600 s), counted from the send.
      timeoutSeconds: 3600,
      requestType: "document.ingest",
      tenantId: "acme",
      correlationId: "c-42",
      payload: ingestCommand().payload,
      // The first step has no earlier results.
      results: {},
    });
    expect(message!.contentType).toBe("application/json");
    expect(message!.subject).toBe("document.ingest/ocr");
    expect(message!.correlationId).toBe("c-42");
    expect(message!.partitionKey).toBe(jobId);
    expect(message!.applicationProperties).toEqual({
      jobId,
      stepId: stored.steps[0]!.stepId,
      stepName: "ocr",
      requestType: "document.ingest",
      tenantId: "acme",
      traceparent: TRACEPARENT,
    });
    await eventually(async () => (await entryOf(runtime, jobId)).status === "sent", { what: "entry sent" });
    expect((await runtime.store.getJob(jobId))!.job.status).toBe("in_progress");
  });

  test("without a command correlationId the message correlates by job id", async () => {
    const { postCommand, receive } = await setup();
    const { correlationId: _none, ...command } = ingestCommand();
    const { jobId } = (await (await postCommand(command)).json()) as { jobId: string };
    const [message] = await receive("ocr-requests", 1);
    expect(message!.correlationId).toBe(jobId);
    expect(message!.applicationProperties?.traceparent).toBeUndefined();
  });

  test("200 commands published concurrently arrive once each", async () => {
    const { postCommand, receive, broker, runtime } = await setup();
    const responses = await Promise.all(Array.from({ length: 200 }, (_, i) => postCommand(ingestCommand({ correlationId: `c-${i}` }))));
    expect(responses.every((r) => r.status === 202)).toBe(true);
    const messages = await receive("ocr-requests", 200, { timeoutMs: 15_000 });
    expect(messages).toHaveLength(200);
    expect(new Set(messages.map((m) => m.messageId)).size).toBe(200);
    expect(broker.accepted("ocr-requests")).toHaveLength(200);
    expect(broker.duplicates("ocr-requests")).toBe(0);
    await runtime.dispatcher!.drain();
    const ids = await Promise.all(responses.map(async (r) => ((await r.json()) as { jobId: string }).jobId));
    for (const id of ids) expect((await entryOf(runtime, id)).status).toBe("sent");
  });

  test("a broker that refuses connections: still 202, the entry stays pending with its attempt and error", async () => {
    const { postCommand, broker, runtime, request } = await setup({}, { LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "1" });
    await broker.refuseConnections(true);
    const response = await postCommand(ingestCommand());
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    const entry = await firstAttempt(runtime, jobId, 10_000);
    expect(entry.status).toBe("pending");
    expect(entry.lastError).toBeString();
    const ready = await request("/readyz");
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { detail: string }).detail).toContain("publisher");
  });

  test("a broker that stalls sends: the publish is abandoned after LUCIUS_OUTBOX_PUBLISH_TIMEOUT, the entry stays pending", async () => {
    const { postCommand, broker, runtime } = await setup({}, { LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "0.3" });
    // The broker still attaches links; it leaves the sends unanswered.
    broker.stallSends(true);
    const response = await postCommand(ingestCommand());
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    const entry = await firstAttempt(runtime, jobId, 5000);
    expect(entry).toMatchObject({ status: "pending", lastError: "publish timed out after 0.3s" });
    broker.stallSends(false);
  });

  test("an unknown topic fails the entry at once with the reason", async () => {
    const protocols = buildRegistry(
      { protocols: [{ requestType: "invoice.parse", version: 1, steps: [{ name: "parse", topic: "no-such-topic", payloadSchema: { type: "object" } }] }] },
      { source: "test", readSchema: () => ({}) },
    );
    const { postCommand, runtime } = await setup({}, {}, protocols);
    const response = await postCommand({ requestType: "invoice.parse", tenantId: "acme", payload: {} });
    expect(response.status).toBe(202);
    const { jobId } = (await response.json()) as { jobId: string };
    const entry = await eventually(
      async () => {
        const current = await entryOf(runtime, jobId);
        return current.status === "failed" && current;
      },
      { timeoutMs: 10_000, what: "a failed entry" },
    );
    expect(entry.attempts).toBe(1);
    expect(entry.lastError).toContain("MessagingEntityNotFound");
  });

  test("a message too large for the link fails alone; the rest of its batch is sent", async () => {
    const bus = await startBroker({ maxMessageSize: 16 * 1024 });
    cleanups.push(() => bus.stop());
    const store = createMemoryStore();
    const publisher = createServiceBusPublisher({ connectionString: bus.broker.connectionString, readinessTopic: null, logger: silentLogger });
    cleanups.push(() => publisher.close());
    const dispatcher = createDispatcher({ store, publisher, logger: silentLogger, publishTimeoutSeconds: 5, retryDelaySeconds: 30, maxAttempts: 3 });
    const items = [];
    for (const payload of [{ documentId: "a" }, { documentId: "b", blob: "x".repeat(40_000) }, { documentId: "c" }]) {
      const { job, steps, outbox } = await storeJob(store, sampleJob("acme", { payload }));
      items.push({ job, step: steps[0]!, entry: outbox[0]! });
    }
    await dispatcher.publishNow(items);
    const entries = await Promise.all(items.map(async (item) => (await store.getJob(item.job.jobId))!.outbox[0]!));
    expect(entries.map((e) => e.status)).toEqual(["sent", "failed", "sent"]);
    expect(entries[1]!.lastError).toContain("MessageSizeExceeded");
    expect(bus.broker.accepted("ocr-requests").map((m) => m.message_id)).toEqual([items[0]!.entry.outboxId, items[2]!.entry.outboxId]);
  });

  test("links dropped by the broker are opened again on the next publish", async () => {
    const { postCommand, broker, runtime } = await setup();
    await postCommand(ingestCommand());
    await runtime.dispatcher!.drain();
    broker.dropLinks();
    const { jobId } = (await (await postCommand(ingestCommand({ correlationId: "after-drop" }))).json()) as { jobId: string };
    const entry = await eventually(
      async () => {
        const current = await entryOf(runtime, jobId);
        return current.attempts >= 1 && current;
      },
      { timeoutMs: 10_000 },
    );
    // Either the SDK re-attached at once, or the attempt failed retryably and stays pending for the sweeper.
    expect(["sent", "pending"]).toContain(entry.status);
    await postCommand(ingestCommand({ correlationId: "later" }));
    // What reached the broker, without waiting out a receive for the entry the sweeper may still hold.
    await eventually(() => broker.accepted("ocr-requests").some((m) => m.correlation_id === "later"), { timeoutMs: 3000, what: "the later command published" });
  });
});

// Without the bound on close() this test never ends and fails on its own deadline.
test("close() returns even when the broker went away mid-connection, after its close timeout", async () => {
  const bus = await startBroker();
  const publisher = createServiceBusPublisher({
    connectionString: bus.broker.connectionString,
    readinessTopic: "ocr-requests",
    logger: silentLogger,
    closeTimeoutMs: 300,
  });
  await publisher.check();
  await bus.stop();
  const started = performance.now();
  await publisher.close();
  // Bounded by the close timeout, not by the SDK's own (much longer) wait for the handshake.
  expect(performance.now() - started).toBeLessThan(2000);
}, 10_000);
