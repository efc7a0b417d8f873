/**
 * Protocols as graphs on every backend, through the dev broker: parallel branches dispatched in
 * one change, a join that waits for all of them, a condition that skips a step, fail-fast with a
 * compensation step that runs once, and cancel that does not run it.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { acceptedBody } from "../../dev/dev-broker.ts";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { loadProtocolFile } from "../../src/config/protocols.ts";
import type { JobChanges, JobStore } from "../../src/storage/job-store.ts";
import { type Backend, storeFor } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("graph");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const step = (name: string, extra: Record<string, unknown> = {}) => ({ name, topic: name, payloadSchema: { type: "object" }, ...extra });
const { protocols } = writeProtocols(dir, [
  {
    requestType: "document.pages",
    version: 1,
    steps: [
      step("split", { after: [] }),
      step("classify", { after: ["split"] }),
      step("embed", { after: ["split"], when: { pointer: "/results/split/kind", equals: "pdf" } }),
      step("merge", { after: ["classify", "embed"] }),
    ],
    onFailure: step("cleanup"),
  },
]);
const TOPICS = Object.fromEntries(["split", "classify", "embed", "merge", "cleanup"].map((topic) => [topic, ["workers"]]));

interface MessageBody {
  jobId: string;
  results: Record<string, unknown>;
  failure?: unknown;
}

interface StepView {
  stepId: string;
  name: string;
  status: string;
  result: Record<string, unknown> | null;
}

async function setup(backend: Backend) {
  const bus = await startBroker({ topics: TOPICS });
  cleanups.push(() => bus.stop());
  const inner = await storeFor(backend);
  await inner.init?.();
  // Every change with new directives, to see which were dispatched together.
  const changes: JobChanges[] = [];
  const store: JobStore = {
    ...inner,
    saveChanges: async (jobId, change) => {
      const saved = await inner.saveChanges(jobId, change);
      // Stored changes only. (A lease writes a pending entry too, but never a step.)
      if ((change.steps ?? []).length > 0 && (change.outbox ?? []).some((entry) => entry.attempts === 0 && entry.status === "pending")) changes.push(change);
      return saved;
    },
  };
  const service = await startTestRuntime({
    store,
    protocols,
    publisherFromSettings: true,
    // The fast path publishes; should it miss one (on `table` a change can lose a race midway),
    // the retry loop takes it a few seconds later, as in production.
    env: {
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_OUTBOX_RETRY_DELAY: "3",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
      LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "1",
    },
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  const submit = async () => {
    const response = await service.postCommand({ requestType: "document.pages", tenantId: "acme", payload: { documentId: "d1" } });
    expect(response.status).toBe(202);
    return ((await response.json()) as { jobId: string }).jobId;
  };
  const view = async (jobId: string) => (await (await service.request(`/v1/jobs/${jobId}`)).json()) as { status: string; steps: StepView[] };
  const stepOf = async (jobId: string, name: string) => (await view(jobId)).steps.find((s) => s.name === name)!;
  const report = async (jobId: string, name: string, event: Record<string, unknown>) => {
    const { stepId } = await stepOf(jobId, name);
    const response = await service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: `${name}-${event.status}-${crypto.randomUUID()}`, ...event }),
    });
    return (await response.json()) as { outcome: string; jobStatus: string };
  };
  /** The messages the broker took on a topic (published once each: the broker drops duplicates), their JSON bodies decoded. */
  const published = (topic: string) => bus.broker.accepted(topic).map((m) => acceptedBody<MessageBody>(m));
  const publishedFor = async (jobId: string, topic: string, count: number) => {
    await eventually(() => published(topic).filter((m) => m.jobId === jobId).length >= count, { timeoutMs: 10_000, what: `${count} message(s) on ${topic}` });
    return published(topic).filter((m) => m.jobId === jobId);
  };
  return { service, changes, submit, view, stepOf, report, published, publishedFor };
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`protocol graph: ${backend}`, () => {
    test("parallel branches go out in one change; the join waits for both; the job succeeds", async () => {
      const { changes, submit, view, report, published, publishedFor } = await setup(backend);
      const jobId = await submit();
      await publishedFor(jobId, "split", 1);
      changes.length = 0;
      expect((await report(jobId, "split", { status: "succeeded", result: { kind: "pdf", pages: 3 } })).outcome).toBe("applied");
      // classify and embed: two directives of one stored change.
      expect(changes).toHaveLength(1);
      // (The answered step's own directive may ride along, marked sent, when the answer came first.)
      expect(
        changes[0]!
          .outbox!.filter((entry) => entry.status === "pending")
          .map((entry) => entry.stepId.split(".s")[1])
          .sort(),
      ).toEqual(["1", "2"]);
      const [classify] = await publishedFor(jobId, "classify", 1);
      const [embed] = await publishedFor(jobId, "embed", 1);
      expect(classify!.results).toEqual({ split: { kind: "pdf", pages: 3 } });
      expect(embed!.results).toEqual({ split: { kind: "pdf", pages: 3 } });

      await report(jobId, "classify", { status: "succeeded", result: { label: "invoice" } });
      expect((await view(jobId)).steps.find((s) => s.name === "merge")!.status).toBe("pending");
      expect(published("merge").filter((m) => m.jobId === jobId)).toHaveLength(0);
      await report(jobId, "embed", { status: "succeeded", result: { vectors: 3 } });
      const [merge] = await publishedFor(jobId, "merge", 1);
      expect(merge!.results).toEqual({ split: { kind: "pdf", pages: 3 }, classify: { label: "invoice" }, embed: { vectors: 3 } });
      expect((await report(jobId, "merge", { status: "succeeded" })).jobStatus).toBe("succeeded");
      const ended = await view(jobId);
      expect(ended.steps.map((s) => [s.name, s.status])).toEqual([
        ["split", "succeeded"],
        ["classify", "succeeded"],
        ["embed", "succeeded"],
        ["merge", "succeeded"],
        ["cleanup", "skipped"],
      ]);
      expect(published("cleanup")).toHaveLength(0);
    });

    // On `table` the loser of the race for the job's row has written its step's row: its retry
    // sees both branches done and dispatches the join (domain/catch-up.ts).
    test("two branches ending at the same moment: the join is dispatched once, with both results", async () => {
      const { service, submit, view, report, publishedFor, published } = await setup(backend);
      const jobId = await submit();
      await publishedFor(jobId, "split", 1);
      await report(jobId, "split", { status: "succeeded", result: { kind: "pdf" } });
      await publishedFor(jobId, "embed", 1);
      const steps = (await view(jobId)).steps;
      const idOf = (name: string) => steps.find((s) => s.name === name)!.stepId;
      // Both events read the job before either writes: each decides without the other's end.
      const answers = await Promise.all(
        (["classify", "embed"] as const).map((name) =>
          service.request(`/v1/jobs/${jobId}/steps/${idOf(name)}/events`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ eventId: `${name}-done`, status: "succeeded", result: { [name]: true } }),
          }),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual([202, 202]);
      const [merge] = await publishedFor(jobId, "merge", 1);
      expect(merge!.results).toEqual({ split: { kind: "pdf" }, classify: { classify: true }, embed: { embed: true } });
      expect(published("merge").filter((m) => m.jobId === jobId)).toHaveLength(1);
    });

    test("a condition that does not hold skips its step; the join still runs, without its result", async () => {
      const { submit, view, report, published, publishedFor } = await setup(backend);
      const jobId = await submit();
      await publishedFor(jobId, "split", 1);
      await report(jobId, "split", { status: "succeeded", result: { kind: "docx" } });
      await publishedFor(jobId, "classify", 1);
      expect((await view(jobId)).steps.find((s) => s.name === "embed")!.status).toBe("skipped");
      await report(jobId, "classify", { status: "succeeded", result: { label: "letter" } });
      const [merge] = await publishedFor(jobId, "merge", 1);
      expect(merge!.results).toEqual({ split: { kind: "docx" }, classify: { label: "letter" } });
      expect(published("embed").filter((m) => m.jobId === jobId)).toHaveLength(0);
      expect((await report(jobId, "merge", { status: "succeeded" })).jobStatus).toBe("succeeded");
    });

    test("a failure fails fast: the running sibling is cancelled, its late event ignored, and onFailure runs once with the failure and the results", async () => {
      const { service, submit, view, report, publishedFor, published } = await setup(backend);
      const jobId = await submit();
      await publishedFor(jobId, "split", 1);
      await report(jobId, "split", { status: "succeeded", result: { kind: "pdf" } });
      // Both branches out and their publishes stored: the failure below meets them running.
      await service.runtime.dispatcher!.drain();
      await publishedFor(jobId, "embed", 1);
      const failed = await report(jobId, "classify", { status: "failed", error: { code: "bad-scan", message: "unreadable", retryable: false } });
      expect(failed.jobStatus).toBe("failed");
      const [cleanup] = await publishedFor(jobId, "cleanup", 1);
      expect(cleanup!.failure).toEqual({ step: "classify", error: { code: "bad-scan", message: "unreadable", retryable: false } });
      expect(cleanup!.results).toEqual({ split: { kind: "pdf" } });
      // The sibling was cancelled: its answer now changes nothing.
      expect((await report(jobId, "embed", { status: "succeeded", result: { vectors: 1 } })).outcome).toBe("ignored");
      expect((await report(jobId, "cleanup", { status: "succeeded", result: { removed: 3 } })).outcome).toBe("applied");
      const ended = await view(jobId);
      expect(ended.status).toBe("failed");
      expect(ended.steps.map((s) => [s.name, s.status])).toEqual([
        ["split", "succeeded"],
        ["classify", "failed"],
        ["embed", "cancelled"],
        ["merge", "cancelled"],
        ["cleanup", "succeeded"],
      ]);
      expect(published("cleanup").filter((m) => m.jobId === jobId)).toHaveLength(1);
      expect(published("merge").filter((m) => m.jobId === jobId)).toHaveLength(0);
    });

    test("cancel does not run onFailure", async () => {
      const { service, submit, view, publishedFor, published } = await setup(backend);
      const jobId = await submit();
      await publishedFor(jobId, "split", 1);
      await service.runtime.dispatcher!.drain();
      expect((await service.request(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).status).toBe(200);
      expect((await view(jobId)).steps.map((s) => s.status)).toEqual(["cancelled", "cancelled", "cancelled", "cancelled", "cancelled"]);
      expect(published("cleanup")).toHaveLength(0);
    });
  });
}

describe("the compensation step's deadline", () => {
  const timedFile = join(dir, "timed.json");
  writeFileSync(
    timedFile,
    JSON.stringify({
      protocols: [
        {
          requestType: "document.timed",
          version: 1,
          steps: [step("work", { timeoutSeconds: 0 })],
          onFailure: step("cleanup", { timeoutSeconds: 60, maxAttempts: 2 }),
        },
      ],
    }),
  );

  for (const backend of ["memory", "table", "ledger"] as const) {
    test(`${backend}: still applies after the job failed: another attempt, then the step fails timed-out, the job stays failed`, async () => {
      const clock = { at: new Date() };
      const store = await storeFor(backend);
      await store.init?.();
      const service = await startTestRuntime({ store, protocols: loadProtocolFile(timedFile, 0), now: () => clock.at });
      cleanups.push(() => service.runtime.stop());
      const { jobId } = (await (await service.postCommand({ requestType: "document.timed", tenantId: "acme", payload: {} })).json()) as { jobId: string };
      await service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ eventId: "work-failed", status: "failed", error: { code: "broken", message: "no" } }),
      });
      const cleanupOf = async () => (await service.runtime.store.getJob(jobId))!.steps[1]!;
      expect((await cleanupOf()).attempts).toBe(1);
      clock.at = new Date(clock.at.getTime() + 61_000);
      expect(await service.runtime.deadlines.tick()).toMatchObject({ retried: 1 });
      expect((await cleanupOf()).attempts).toBe(2);
      clock.at = new Date(clock.at.getTime() + 61_000);
      expect(await service.runtime.deadlines.tick()).toMatchObject({ "timed-out": 1 });
      const ended = (await service.runtime.store.getJob(jobId))!;
      expect(ended.job.status).toBe("failed");
      expect(ended.steps[1]).toMatchObject({ status: "failed", error: { code: "timed-out" } });
    });
  }
});
