/**
 * Step deadlines end every job, on every backend, with the real SDK and the dev broker: a silent
 * worker's step is dispatched again, then fails `timed-out`; the job fails and the rest is
 * cancelled; an answer of an attempt that is over changes nothing. The clock is injected: the
 * test moves it instead of waiting out the deadlines.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { buildRegistry } from "../../src/config/protocols.ts";
import { type Backend, storeFor } from "../support/stores.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** `ocr` has one second per attempt and two attempts; `embed` never runs here. */
const protocols = buildRegistry(
  {
    protocols: [
      {
        requestType: "document.ingest",
        version: 1,
        steps: [
          { name: "ocr", topic: "ocr-requests", payloadSchema: { type: "object" }, maxAttempts: 2, timeoutSeconds: 1 },
          { name: "embed", topic: "vector-ingestion", payloadSchema: { type: "object" } },
        ],
      },
    ],
  },
  { source: "test", readSchema: () => ({}) },
);

type View = {
  status: string;
  steps: { stepId: string; status: string; attempts: number; error: { code: string } | null; deadlineAt: string | null }[];
  outbox: { outboxId: string; status: string }[];
};

async function setup(backend: Backend) {
  const bus = await startBroker();
  cleanups.push(() => bus.stop());
  let offsetMs = 0;
  const service = await startTestRuntime({
    env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString },
    publisherFromSettings: true,
    store: await storeFor(backend),
    protocols,
    now: () => new Date(Date.now() + offsetMs),
  });
  cleanups.push(() => service.runtime.stop());
  const view = async (jobId: string) => (await (await service.request(`/v1/jobs/${jobId}`)).json()) as View;
  return {
    ...service,
    bus,
    view,
    /** Moves the service's clock past the current attempt's deadline. */
    passDeadline: () => {
      offsetMs += 1500;
    },
    event: (jobId: string, stepId: string, body: Record<string, unknown>) =>
      service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      }),
    /** Waits until `count` directives of the job are sent. */
    sent: (jobId: string, count: number) =>
      eventually(async () => (await view(jobId)).outbox.filter((o) => o.status === "sent").length === count, { what: `${count} sent` }),
  };
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`step deadlines: ${backend}`, () => {
    test("a silent worker's step is dispatched again, then fails timed-out; the job fails, the rest is cancelled, late answers change nothing", async () => {
      const { postCommand, runtime, bus, view, passDeadline, event, sent } = await setup(backend);
      const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
      await sent(jobId, 1);
      const [first] = await bus.receive("ocr-requests", 1);
      expect(first?.body).toMatchObject({ jobId, attempt: 1 });
      const stepId = (await view(jobId)).steps[0]!.stepId;

      // Before its deadline the step is left alone.
      expect(await runtime.deadlines.tick()).toMatchObject({ retried: 0, "timed-out": 0 });

      passDeadline();
      expect(await runtime.deadlines.tick()).toMatchObject({ retried: 1 });
      await sent(jobId, 2);
      const [second] = await bus.receive("ocr-requests", 1);
      expect(second?.body).toMatchObject({ jobId, attempt: 2 });
      expect(second?.messageId).not.toBe(first?.messageId);
      const retried = await view(jobId);
      expect(retried.status).toBe("in_progress");
      expect(retried.steps[0]).toMatchObject({ status: "initiated", attempts: 2, error: { code: "timed-out" } });

      // The first attempt's worker answers late: ignored, the second attempt still runs.
      const late = await event(jobId, stepId, { eventId: "late-1", status: "succeeded", attempt: 1, result: { pages: 1 } });
      expect(await late.json()).toMatchObject({ outcome: "ignored", stepStatus: "initiated" });

      passDeadline();
      expect(await runtime.deadlines.tick()).toMatchObject({ "timed-out": 1 });
      const failed = await view(jobId);
      expect(failed.status).toBe("failed");
      expect(failed.steps.map((s) => [s.status, s.attempts, s.error?.code ?? null])).toEqual([
        ["failed", 2, "timed-out"],
        ["cancelled", 0, null],
      ]);
      // Nothing for the later step was ever published, and nothing is left to expire.
      expect(await bus.receive("vector-ingestion", 1, { timeoutMs: 200 })).toEqual([]);
      expect(await runtime.store.findExpiredSteps(new Date(Date.now() + 60_000), 10)).toEqual([]);

      const later = await event(jobId, stepId, { eventId: "late-2", status: "succeeded", attempt: 2 });
      expect(await later.json()).toMatchObject({ outcome: "ignored", jobStatus: "failed", stepStatus: "failed" });
      expect((await view(jobId)).status).toBe("failed");
    });
  });
}

for (const backend of ["memory", "table", "ledger"] as const) {
  test(`step deadlines: ${backend}: two replicas meeting the same passed deadline dispatch the step once`, async () => {
    const store = await storeFor(backend);
    let offsetMs = 0;
    const now = () => new Date(Date.now() + offsetMs);
    const replicas = await Promise.all([0, 1].map(() => startTestRuntime({ store, protocols, now })));
    for (const replica of replicas) cleanups.push(() => replica.runtime.stop());
    const { jobId } = (await (await replicas[0]!.postCommand(ingestCommand())).json()) as { jobId: string };
    offsetMs += 1500;
    const [a, b] = await Promise.all(replicas.map((replica) => replica.runtime.deadlines.tick()));
    expect(a!.retried + b!.retried).toBe(1);
    const job = (await store.getJob(jobId))!;
    expect(job.steps[0]!.attempts).toBe(2);
    expect(job.outbox.map((o) => o.outboxId).sort()).toEqual([`${jobId}.s0.d0`, `${jobId}.s0.d1`]);
  });
}

describe("step deadlines: the loop", () => {
  test("the running service finds passed deadlines by itself, on its retry interval", async () => {
    const bus = await startBroker();
    cleanups.push(() => bus.stop());
    let offsetMs = 0;
    const service = await startTestRuntime({
      env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_OUTBOX_RETRY_INTERVAL: "0.05" },
      publisherFromSettings: true,
      protocols,
      now: () => new Date(Date.now() + offsetMs),
    });
    cleanups.push(() => service.runtime.stop());
    service.runtime.start();
    const { jobId } = (await (await service.postCommand(ingestCommand())).json()) as { jobId: string };
    const view = async () => (await (await service.request(`/v1/jobs/${jobId}`)).json()) as View;
    const sentCount = async () => (await view()).outbox.filter((o) => o.status === "sent").length;
    await eventually(async () => (await sentCount()) === 1, { what: "the first dispatch" });
    // The clock passes each attempt's deadline; nobody calls the sweep: the loop does.
    offsetMs += 1500;
    await eventually(async () => (await sentCount()) === 2, { what: "the second dispatch" });
    offsetMs += 1500;
    const failed = await eventually(
      async () => {
        const current = await view();
        return current.status === "failed" && current;
      },
      { what: "the job to fail on its deadlines" },
    );
    expect(failed.steps[0]).toMatchObject({ status: "failed", attempts: 2, error: { code: "timed-out" } });
  });
});
