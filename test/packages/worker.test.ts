/**
 * @lucius/worker against the real service (a process, on memory), the dev broker and its events
 * queue: every worker of a graph job written with the library, a worker SIGKILLed mid-step, a
 * handler that overruns its deadline, a result too large to report.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { createWorker, StepFailure, type Worker } from "@lucius/worker";
import { eventually } from "../../dev/eventually.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { type ServiceProcess, startService } from "../support/service-process.ts";
import { tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("worker-lib");
const object = { type: "object" };
const { protocolsFile } = writeProtocols(dir, [
  {
    requestType: "document.pages",
    version: 1,
    steps: [
      { name: "split", topic: "split", payloadSchema: object, after: [] },
      { name: "ocr", topic: "ocr", payloadSchema: object, after: ["split"], map: { items: "/results/split/pages", maxConcurrency: 3 } },
      { name: "classify", topic: "classify", payloadSchema: object, after: ["split"] },
      { name: "merge", topic: "merge", payloadSchema: object, after: ["ocr", "classify"] },
    ],
  },
  { requestType: "document.stuck", version: 1, steps: [{ name: "stuck", topic: "stuck", payloadSchema: object, maxAttempts: 2 }] },
  { requestType: "document.slow", version: 1, steps: [{ name: "slow", topic: "slow", payloadSchema: object, timeoutSeconds: 1 }] },
  { requestType: "document.big", version: 1, steps: [{ name: "big", topic: "big", payloadSchema: object }] },
  { requestType: "document.long", version: 1, steps: [{ name: "long", topic: "long", payloadSchema: object, heartbeatSeconds: 1 }] },
]);
const TOPICS = Object.fromEntries(["split", "ocr", "classify", "merge", "stuck", "slow", "big", "long"].map((topic) => [topic, ["workers"]]));
const silent = { info: () => {}, warn: () => {}, error: () => {} };

let bus: Awaited<ReturnType<typeof startBroker>>;
let service: ServiceProcess;
const workers: Worker[] = [];

beforeAll(async () => {
  // A short lock: a killed worker's message comes back within the test.
  bus = await startBroker({ topics: TOPICS, queues: ["lucius-events"], lockDurationMs: 1500 });
  service = await startService({
    LUCIUS_PROTOCOLS_FILE: protocolsFile,
    LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
    LUCIUS_EVENTS_ENTITY: "lucius-events",
    LUCIUS_OUTBOX_RETRY_INTERVAL: "0.2",
    LUCIUS_OUTBOX_RETRY_DELAY: "0.5",
  });
}, 20_000);

// Each test's workers stop with it: a later test's messages go to its own.
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
});

afterAll(async () => {
  service.proc.kill("SIGTERM");
  await service.proc.exited;
  await bus.stop();
}, 20_000);

function worker(handlers: Parameters<typeof createWorker>[0]["handlers"]): Worker {
  const started = createWorker({ connection: bus.broker.connectionString, handlers, maxLockRenewalMs: 0, handleSignals: false, log: silent });
  workers.push(started);
  return started;
}

/** Runs the stuck-worker fixture on topic `stuck` until it says where it hangs, then SIGKILLs it; what it said. */
async function killedWorker(mode: "mid-handler" | "before-complete"): Promise<string> {
  const stuck = Bun.spawn(["bun", resolve(import.meta.dir, "fixtures/stuck-worker.ts"), bus.broker.connectionString, "stuck", mode], {
    cwd: resolve(import.meta.dir, "../.."),
    stdout: "pipe",
    stderr: "inherit",
  });
  const said = new TextDecoder().decode((await stuck.stdout.getReader().read()).value);
  stuck.kill("SIGKILL");
  await stuck.exited;
  return said;
}

async function submit(requestType: string, payload: Record<string, unknown> = {}): Promise<string> {
  const answer = await fetch(new URL("/v1/commands", service.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ requestType, tenantId: "acme", payload }),
  });
  expect(answer.status).toBe(202);
  return ((await answer.json()) as { jobId: string }).jobId;
}

type JobView = { status: string; steps: { name: string; status: string; result: Record<string, unknown> | null; error: { code: string } | null }[] };
const job = async (jobId: string) => (await (await fetch(new URL(`/v1/jobs/${jobId}`, service.url))).json()) as JobView;
const ended = (jobId: string, timeoutMs = 10_000) =>
  eventually(
    async () => {
      const view = await job(jobId);
      return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : undefined;
    },
    { timeoutMs, what: `job ${jobId} to end` },
  );

describe("@lucius/worker", () => {
  test("a document.pages job (split, OCR mapped over the pages beside classify, merge) runs to succeeded with every worker written with the library", async () => {
    const items: { item: unknown; itemIndex: number | undefined }[] = [];
    worker({
      split: async () => ({ pages: [1, 2, 3, 4, 5] }),
      ocr: async (message) => {
        items.push({ item: message.item, itemIndex: message.itemIndex });
        return { text: `page ${message.item}` };
      },
      classify: async (message) => ({ kind: "letter", pages: (message.results.split?.pages as unknown[] | undefined)?.length ?? 0 }),
      merge: async (message) => ({ from: Object.keys(message.results).sort() }),
    });
    const view = await ended(await submit("document.pages", { documentId: "d1" }));
    expect(view.status).toBe("succeeded");
    expect(items.map((i) => i.itemIndex).sort()).toEqual([0, 1, 2, 3, 4]);
    expect(items.map((i) => i.item).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(view.steps.find((s) => s.name === "classify")?.result).toEqual({ kind: "letter", pages: 5 });
    expect(view.steps.find((s) => s.name === "merge")?.result).toEqual({ from: ["classify", "ocr", "split"] });
  }, 20_000);

  test("a worker SIGKILLed mid-step: its message is delivered again to another worker, and the step ends once", async () => {
    const jobId = await submit("document.stuck");
    expect(await killedWorker("mid-handler")).toStartWith("taken ");
    const deliveries: number[] = [];
    worker({
      stuck: async (message) => {
        deliveries.push(message.deliveryCount);
        return { by: "survivor" };
      },
    });
    const view = await ended(jobId);
    expect(view.status).toBe("succeeded");
    expect(view.steps[0]?.result).toEqual({ by: "survivor" });
    // The same message (attempt 1) came back: no retry was spent, and one event ended the step.
    expect(deliveries.length).toBe(1);
    const history = (await (await fetch(new URL(`/v1/jobs/${jobId}/history`, service.url))).json()) as { items: { action: string; status?: string }[] };
    expect(history.items.filter((e) => e.action === "event").length).toBe(1);
  }, 20_000);

  test("a worker SIGKILLed after its event was sent but before it completed the message: the redelivery reports the same event id, which the service takes as a duplicate", async () => {
    const jobId = await submit("document.stuck");
    const completing = await killedWorker("before-complete");
    expect(completing).toStartWith("completing ");
    const messageId = completing.trim().split(" ")[1]!;
    let redelivered = 0;
    worker({
      stuck: async () => {
        redelivered++;
        return { by: "survivor" };
      },
    });
    await eventually(() => redelivered > 0, { timeoutMs: 10_000, what: "the message to come back" });
    const outcomes = await eventually(
      () => {
        const seen = service.logs.filter((l) => l.msg === "step event received" && l.eventId === `${messageId}:succeeded`).map((l) => l.outcome);
        return seen.length === 2 ? seen : undefined;
      },
      { timeoutMs: 10_000, what: "both deliveries' events at the service" },
    );
    expect(outcomes).toEqual(["applied", "duplicate"]);
    const view = await ended(jobId);
    expect(view.steps[0]?.result).toEqual({ by: "killed" });
  }, 20_000);

  test("a handler that overruns its attempt's deadline sees context.signal aborted with the reason", async () => {
    const seen: { reason: unknown; afterMs: number }[] = [];
    worker({
      slow: async (message, context) => {
        expect(message.deadline).toBeInstanceOf(Date);
        const started = Date.now();
        await new Promise<void>((resolve) => context.signal.addEventListener("abort", () => resolve(), { once: true }));
        seen.push({ reason: context.signal.reason, afterMs: Date.now() - started });
        // A handler gives up on its signal: nothing is reported, the service times the attempt out.
        throw new Error(`stopped: ${context.signal.reason}`);
      },
    });
    const jobId = await submit("document.slow");
    await eventually(() => seen.length > 0, { timeoutMs: 5000, what: "the handler's signal to abort" });
    expect(seen[0]!.reason).toBe("deadline");
    expect(seen[0]!.afterMs).toBeLessThan(2000);
    const view = await ended(jobId);
    expect(view.status).toBe("failed");
    expect(view.steps[0]?.error?.code).toBe("timed-out");
  }, 20_000);

  test("a handler that runs past its heartbeat interval without reporting is kept alive by the library's own beats", async () => {
    worker({
      long: async (message, context) => {
        expect(message.heartbeatSeconds).toBe(1);
        // Three intervals of silence from the handler: only the library's beats keep the attempt alive.
        await new Promise((resolve) => setTimeout(resolve, 3000));
        expect(context.signal.aborted).toBe(false);
        return { done: true };
      },
    });
    const view = await ended(await submit("document.long"));
    expect(view.status).toBe("succeeded");
    expect(view.steps[0]?.result).toEqual({ done: true });
  }, 20_000);

  test("a result too large to report is a failed step with a clear error, and a thrown StepFailure is its failure", async () => {
    let calls = 0;
    worker({
      big: async () => {
        calls++;
        if (calls === 1) return { blob: "x".repeat(300 * 1024) };
        throw new StepFailure("NOT_A_PDF", "the file is not a PDF", { retryable: false });
      },
    });
    const first = await ended(await submit("document.big"));
    expect(first.status).toBe("failed");
    expect(first.steps[0]?.error?.code).toBe("RESULT_TOO_LARGE");
    const second = await ended(await submit("document.big"));
    expect(second.steps[0]?.error?.code).toBe("NOT_A_PDF");
  }, 20_000);
});
