/**
 * Workers on the dev broker, with the real SDK on both sides: they take each step's message
 * from its topic and answer on `replyTo`; the service runs every protocol to its end.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { ServiceBusReceivedMessage } from "@azure/service-bus";
import { eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { createLogger } from "../../src/logging/logger.ts";
import { type Backend, storeFor } from "../support/stores.ts";

const EVENTS = "step-events";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function setup(backend: Backend, beforeEventComplete?: (eventId: string) => void) {
  const bus = await startBroker({ queues: [EVENTS] });
  cleanups.push(() => bus.stop());
  const service = await startTestRuntime({
    store: await storeFor(backend),
    publisherFromSettings: true,
    env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_EVENTS_ENTITY: EVENTS },
    ...(beforeEventComplete ? { beforeEventComplete } : {}),
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  return { bus, ...service };
}

/** A worker on one topic: answers every message on its replyTo with `answer(message)`. */
function worker(bus: Awaited<ReturnType<typeof startBroker>>, topic: string, answer: (message: ServiceBusReceivedMessage) => Record<string, unknown>) {
  const receiver = bus.client.createReceiver(topic, "workers", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
  const seen: ServiceBusReceivedMessage[] = [];
  const subscription = receiver.subscribe(
    {
      async processMessage(message) {
        seen.push(message);
        const body = message.body as { jobId: string; stepId: string };
        await bus.client
          .createSender(message.replyTo!)
          .sendMessages({ body: { jobId: body.jobId, stepId: body.stepId, ...answer(message) }, contentType: "application/json" });
        await receiver.completeMessage(message);
      },
      async processError() {},
    },
    { autoCompleteMessages: false },
  );
  cleanups.push(async () => {
    await subscription.close();
    await receiver.close();
  });
  return seen;
}

const TOPICS = ["ocr-requests", "vector-ingestion", "semantic-intelligence"];

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`step events over Service Bus: ${backend}`, () => {
    test("worker stubs on each topic complete every step; the job ends succeeded", async () => {
      const { bus, postCommand, runtime } = await setup(backend);
      const seen = TOPICS.map((topic, i) => worker(bus, topic, (m) => ({ eventId: `${m.messageId}-done`, status: "succeeded", result: { step: i } })));
      const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
      await eventually(async () => (await runtime.store.getJob(jobId))?.job.status === "succeeded", { timeoutMs: 15_000, what: "the job succeeded" });
      const job = (await runtime.store.getJob(jobId))!;
      expect(job.steps.map((s) => [s.status, s.result])).toEqual([
        ["succeeded", { step: 0 }],
        ["succeeded", { step: 1 }],
        ["succeeded", { step: 2 }],
      ]);
      expect(seen.map((messages) => messages.length)).toEqual([1, 1, 1]);
      expect(seen.flat().every((m) => m.replyTo === EVENTS)).toBe(true);
    }, 30_000);

    test("a retryable failure with no attempts left fails the job and cancels the rest; a repeated event changes nothing", async () => {
      const { bus, postCommand, runtime } = await setup(backend);
      // ocr has maxAttempts 1 in the bundled protocol (re-dispatch is covered in test/jobs/step-events.test.ts).
      worker(bus, "ocr-requests", (m) => ({
        eventId: `${m.messageId}-busy`,
        status: "failed",
        error: { code: "BUSY", message: "try again", retryable: true },
      }));
      const embed = worker(bus, "vector-ingestion", (m) => ({
        eventId: `${m.messageId}-bad`,
        status: "failed",
        error: { code: "MODEL", message: "no model", retryable: false },
      }));
      const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
      await eventually(async () => (await runtime.store.getJob(jobId))?.job.status === "failed", { timeoutMs: 15_000, what: "the job failed" });
      const job = (await runtime.store.getJob(jobId))!;
      expect(job.steps.map((s) => s.status)).toEqual(["failed", "cancelled", "cancelled"]);
      expect(job.steps[0]!.error).toEqual({ code: "BUSY", message: "try again", retryable: true });
      expect(embed).toHaveLength(0);
      // The same event again: acknowledged, nothing changes.
      const again = await runtime.app.handle(
        new Request(`http://localhost/v1/jobs/${jobId}/steps/${job.steps[0]!.stepId}/events`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ eventId: job.steps[0]!.events[0], status: "succeeded" }),
        }),
      );
      expect(await again.json()).toMatchObject({ outcome: "duplicate" });
    }, 30_000);

    test("cancel stops the job: the next step is never dispatched", async () => {
      const { bus, postCommand, runtime, request } = await setup(backend);
      const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
      const ocr = worker(bus, "ocr-requests", () => ({ eventId: "late-ok", status: "succeeded" }));
      const embed = worker(bus, "vector-ingestion", () => ({ eventId: "never", status: "succeeded" }));
      expect((await request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(200);
      await eventually(() => ocr.length === 1, { timeoutMs: 10_000, what: "the ocr message" });
      await eventually(async () => (await runtime.store.getJob(jobId))!.steps[0]!.events.includes("late-ok") || bus.broker.depth(EVENTS) === 0, {
        timeoutMs: 10_000,
      });
      const job = (await runtime.store.getJob(jobId))!;
      expect(job.job.status).toBe("cancelled");
      expect(job.steps.map((s) => s.status)).toEqual(["cancelled", "cancelled", "cancelled"]);
      expect(job.outbox).toHaveLength(1);
      expect(embed).toHaveLength(0);
    }, 30_000);
  });
}

describe("step events over Service Bus: delivery", () => {
  test("a malformed event is dead-lettered with the reason", async () => {
    const { bus } = await setup("memory");
    await bus.client.createSender(EVENTS).sendMessages({ body: { jobId: "x", status: "finished" }, messageId: "bad-1" });
    const dead = await eventually(
      async () => {
        const got = await bus.client
          .createReceiver(EVENTS, { subQueueType: "deadLetter", receiveMode: "receiveAndDelete" })
          .receiveMessages(1, { maxWaitTimeInMs: 300 });
        return got.length > 0 && got;
      },
      { timeoutMs: 10_000, what: "a dead letter" },
    );
    expect(dead[0]!.messageId).toBe("bad-1");
    expect(dead[0]!.deadLetterReason).toBe("MalformedEvent");
    expect(dead[0]!.deadLetterErrorDescription).toContain("/stepId");
  });

  test("a crash between the event's commit and its completion: delivered again, applied once", async () => {
    const completions = new Map<string, number>();
    const { bus, postCommand, runtime } = await setup("ledger", (eventId) => {
      completions.set(eventId, (completions.get(eventId) ?? 0) + 1);
      if (eventId.endsWith("-done") && completions.get(eventId) === 1) throw new Error("process died before completing the message");
    });
    worker(bus, "ocr-requests", (m) => ({ eventId: `${m.messageId}-done`, status: "succeeded" }));
    const next = worker(bus, "vector-ingestion", () => ({ eventId: "never-mind", status: "progress" }));
    const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
    await eventually(async () => next.length >= 1, { timeoutMs: 15_000, what: "the next step's message" });
    // Delivered again, answered "duplicate", completed this time.
    await eventually(() => [...completions].some(([id, count]) => id.endsWith("-done") && count === 2), { timeoutMs: 10_000, what: "the redelivery" });
    await eventually(() => bus.broker.depth(EVENTS) === 0, { what: "the event completed" });
    const job = (await runtime.store.getJob(jobId))!;
    expect(job.steps[0]!.status).toBe("succeeded");
    expect(job.steps[0]!.events.filter((e) => e.endsWith("-done"))).toHaveLength(1);
    expect(job.outbox.filter((o) => o.stepId === job.steps[1]!.stepId)).toHaveLength(1);
    expect(next.filter((m) => (m.body as { stepIndex: number }).stepIndex === 1)).toHaveLength(1);
  }, 30_000);
});

describe("step events over Service Bus: an events entity that does not exist", () => {
  test("fails readiness naming the entity, and is logged once per back-off, not per poll", async () => {
    const bus = await startBroker({ queues: [EVENTS] });
    cleanups.push(() => bus.stop());
    const lines: { level: string; msg: string }[] = [];
    const service = await startTestRuntime({
      publisherFromSettings: true,
      env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_EVENTS_ENTITY: "no-such-queue" },
      logger: createLogger({ level: "info", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } }),
    });
    service.runtime.start();
    cleanups.push(() => service.runtime.stop());
    const ready = await eventually(
      async () => {
        const response = await service.request("/readyz");
        return response.status === 503 && ((await response.json()) as { checks: Record<string, string> });
      },
      { timeoutMs: 10_000, what: "readiness failing" },
    );
    expect(ready.checks.events).toBe("failing: the events entity 'no-such-queue' does not exist");
    // The first retry comes after a second: until then, one line says what is wrong (besides the
    // start's warning that authentication is off).
    const errors = lines.filter((line) => (line.level === "error" || line.level === "warn") && !String(line.msg).startsWith("LUCIUS_AUTH_MODE=none"));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.msg).toContain("'no-such-queue' does not exist");
  });
});

describe("step events over Service Bus: a broker outage", () => {
  test("is one warning when it begins and one line when events flow again, every error counted in the metrics", async () => {
    const bus = await startBroker({ queues: [EVENTS] });
    cleanups.push(() => bus.stop());
    const lines: { level: string; msg: string; outageSeconds?: number }[] = [];
    const service = await startTestRuntime({
      publisherFromSettings: true,
      env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_EVENTS_ENTITY: EVENTS },
      logger: createLogger({ level: "info", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } }),
    });
    service.runtime.start();
    cleanups.push(() => service.runtime.stop());
    const errorCount = async () => Number(/^lucius_step_event_receiver_errors_total (\d+)/m.exec(await (await service.request("/metrics")).text())?.[1] ?? 0);
    await bus.broker.refuseConnections(true);
    // The SDK retries its connection over and over; without the outage log each try was a warning.
    await eventually(async () => (await errorCount()) >= 4, { timeoutMs: 15_000, intervalMs: 50, what: "several receiver errors" });
    await bus.broker.refuseConnections(false);
    // An event sent once the broker is back reaches the service: the receiver is back too.
    const { jobId } = (await (await service.postCommand(ingestCommand())).json()) as { jobId: string };
    const { outbox } = (await service.runtime.store.getJob(jobId))!;
    const sender = bus.client.createSender(EVENTS);
    await sender.sendMessages({ body: { jobId, stepId: outbox[0]!.stepId, eventId: "after-outage", status: "progress" } });
    await sender.close();
    await eventually(() => lines.some((line) => line.msg === "step events: the receiver is back"), { timeoutMs: 15_000, what: "the recovery line" });
    const receiverWarnings = lines.filter((line) => line.level === "warn" && line.msg.startsWith("step events"));
    expect(receiverWarnings).toHaveLength(1);
    expect(receiverWarnings[0]!.msg).toContain("lost the broker");
    expect(lines.filter((line) => line.msg === "step events: the receiver is back")).toHaveLength(1);
  });
});
