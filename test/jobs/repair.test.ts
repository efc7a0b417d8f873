/**
 * An operator repairs jobs, on every backend, through the dev broker: a redrive runs the failed
 * step again (next attempt, new messageId) and not the ones that succeeded, with a patched
 * payload or a step skipped by a result; a bad patch changes nothing; racing redrives have one
 * winner; a paused job sends nothing until resumed; and the history says all of it, in order,
 * with who did it.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { acceptedBody } from "../../dev/dev-broker.ts";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { newApiKey } from "../../src/auth/api-key-authenticator.ts";
import type { HistoryEntry } from "../../src/domain/model.ts";
import { type Backend, storeFor } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("repair");
const cleanups = cleanupsAfterEach({ ignoreErrors: true });

const schema = {
  type: "object",
  required: ["documentId"],
  properties: { documentId: { type: "string", minLength: 1 }, mode: { enum: ["fast", "careful"] } },
};
const { protocols } = writeProtocols(dir, [
  {
    requestType: "document.repair",
    version: 1,
    steps: ["extract", "transform", "deliver"].map((name) => ({ name, topic: name, payloadSchema: schema })),
  },
]);
const TOPICS = Object.fromEntries(["extract", "transform", "deliver"].map((topic) => [topic, ["workers"]]));

const client = newApiKey({ name: "client", tenants: ["acme"], roles: ["commands.submit", "jobs.read", "steps.report"] });
const operator = newApiKey({ name: "operator-ann", tenants: ["acme"], roles: ["jobs.operate", "jobs.read"] });
const keysFile = join(dir, "keys.json");
writeFileSync(keysFile, JSON.stringify([client.entry, operator.entry]));

interface Message {
  jobId: string;
  outboxId: string;
  attempt: number;
  payload: Record<string, unknown>;
  results: Record<string, unknown>;
}

async function setup(backend: Backend) {
  const bus = await startBroker({ topics: TOPICS });
  cleanups.push(() => bus.stop());
  const store = await storeFor(backend);
  const service = await startTestRuntime({
    store,
    protocols,
    publisherFromSettings: true,
    env: {
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_AUTH_MODE: "apikey",
      LUCIUS_AUTH_KEYS_FILE: keysFile,
      LUCIUS_OUTBOX_RETRY_DELAY: "3",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.5",
      LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "1",
    },
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  const as = (key: string, init: RequestInit = {}): RequestInit => ({ ...init, headers: { ...init.headers, "x-api-key": key } });
  const post = (path: string, key: string, body?: unknown) =>
    service.request(
      path,
      as(key, { method: "POST", ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }) }),
    );
  const submit = async () => {
    const response = await service.postCommand(
      { requestType: "document.repair", tenantId: "acme", payload: { documentId: "d1" } },
      { "x-api-key": client.key },
    );
    expect(response.status).toBe(202);
    return ((await response.json()) as { jobId: string }).jobId;
  };
  const view = async (jobId: string) =>
    (await (await service.request(`/v1/jobs/${jobId}`, as(client.key))).json()) as {
      status: string;
      paused: boolean;
      redrives: number;
      payload?: unknown;
      steps: { stepId: string; name: string; status: string; attempts: number }[];
      outbox: { stepId: string }[];
    };
  const report = async (jobId: string, name: string, event: Record<string, unknown>) => {
    const { stepId } = (await view(jobId)).steps.find((s) => s.name === name)!;
    const response = await post(`/v1/jobs/${jobId}/steps/${stepId}/events`, client.key, { eventId: `${name}-${crypto.randomUUID()}`, ...event });
    return (await response.json()) as { outcome: string; reason?: string; jobStatus: string };
  };
  const sent = (jobId: string, topic: string) =>
    bus.broker
      .accepted(topic)
      .map((m) => acceptedBody<Message>(m))
      .filter((m) => m.jobId === jobId);
  const sentAtLeast = async (jobId: string, topic: string, count: number) => {
    await eventually(() => sent(jobId, topic).length >= count, { timeoutMs: 10_000, what: `${count} message(s) on ${topic}` });
    return sent(jobId, topic);
  };
  const history = async (jobId: string) => {
    const response = await service.request(`/v1/jobs/${jobId}/history?limit=100`, as(operator.key));
    expect(response.status).toBe(200);
    return ((await response.json()) as { items: HistoryEntry[] }).items;
  };
  /**
   * The worker answers once the publish is recorded (its step `initiated`). On `table` an answer
   * that races the publish's own write can lose half a change and dispatch the next step again
   * (docs/STORAGE.md): the repair cases are about what follows, so they start from a settled job.
   */
  const published = (jobId: string, name: string) =>
    eventually(async () => (await view(jobId)).steps.find((s) => s.name === name)!.status === "initiated", { what: `${name} initiated` });
  /** A job whose `transform` failed for good after `extract` succeeded. */
  const failedAtTransform = async () => {
    const jobId = await submit();
    await sentAtLeast(jobId, "extract", 1);
    await published(jobId, "extract");
    expect((await report(jobId, "extract", { status: "succeeded", result: { text: "hello" } })).outcome).toBe("applied");
    await sentAtLeast(jobId, "transform", 1);
    await published(jobId, "transform");
    const failed = await report(jobId, "transform", { status: "failed", attempt: 1, error: { code: "bug", message: "a worker bug", retryable: false } });
    expect(failed.jobStatus).toBe("failed");
    return jobId;
  };
  return { service, post, submit, view, report, sent, sentAtLeast, history, failedAtTransform };
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`repair: ${backend}`, () => {
    test("a job failed at step 2 is redriven with a payload patch: step 2 runs its next attempt under a new messageId, step 1 is not sent again, the old attempt's late event is ignored, the job succeeds, and the history says so in order with who did what", async () => {
      const { post, view, report, sent, sentAtLeast, history, failedAtTransform } = await setup(backend);
      const jobId = await failedAtTransform();
      expect((await view(jobId)).steps.map((s) => s.status)).toEqual(["succeeded", "failed", "cancelled"]);

      const redriven = await post(`/v1/jobs/${jobId}/redrive`, operator.key, { payload: { mode: "fast" } });
      expect(redriven.status).toBe(200);
      expect(await redriven.json()).toMatchObject({ jobId, status: "in_progress", redrives: 1, paused: false });

      const [first, second] = await sentAtLeast(jobId, "transform", 2);
      expect(second!.attempt).toBe(2);
      expect(second!.outboxId).not.toBe(first!.outboxId);
      expect(second!.payload).toEqual({ documentId: "d1", mode: "fast" });
      expect(second!.results).toEqual({ extract: { text: "hello" } });

      const late = await report(jobId, "transform", { status: "succeeded", attempt: 1, result: {} });
      expect(late.outcome).toBe("ignored");
      expect((await report(jobId, "transform", { status: "succeeded", attempt: 2, result: { shape: "ok" } })).outcome).toBe("applied");
      const [deliver] = await sentAtLeast(jobId, "deliver", 1);
      expect(deliver!.payload).toEqual({ documentId: "d1", mode: "fast" });
      expect((await report(jobId, "deliver", { status: "succeeded", attempt: 1, result: {} })).jobStatus).toBe("succeeded");
      expect(sent(jobId, "extract")).toHaveLength(1);
      expect(sent(jobId, "transform")).toHaveLength(2);

      const entries = await history(jobId);
      expect(entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(entries.map((e) => [e.action, e.actor, e.step ?? null, e.status ?? null])).toEqual([
        ["accepted", "client", null, null],
        ["event", "client", "extract", "succeeded"],
        ["event", "client", "transform", "failed"],
        ["redrive", "operator-ann", null, null],
        ["event", "client", "transform", "succeeded"],
        ["event", "client", "deliver", "succeeded"],
      ]);
      const [accepted, extracted, failed, redrive, , delivered] = entries;
      expect(accepted!.dispatched).toEqual([{ step: "extract", messageId: first!.outboxId.replace(".s1.", ".s0."), attempt: 1 }]);
      expect(extracted!.dispatched).toEqual([{ step: "transform", messageId: first!.outboxId, attempt: 1 }]);
      expect(failed).toMatchObject({ jobStatus: "failed", detail: { code: "bug" } });
      expect(failed!.steps).toEqual([
        { step: "transform", status: "failed" },
        { step: "deliver", status: "cancelled" },
      ]);
      expect(redrive).toMatchObject({ jobStatus: "in_progress", detail: { redrive: 1, payloadPatch: { mode: "fast" } } });
      expect(redrive!.dispatched).toEqual([{ step: "transform", messageId: second!.outboxId, attempt: 2 }]);
      expect(delivered!.jobStatus).toBe("succeeded");
      // The history matches the job: its last status is the job's.
      expect((await view(jobId)).status).toBe(entries.at(-1)!.jobStatus!);
    }, 30_000);

    test("a bad payload patch is 422 naming the field, and the job is unchanged; a redrive of a running job is 409", async () => {
      const { post, view, history, submit, failedAtTransform } = await setup(backend);
      const jobId = await failedAtTransform();
      const before = await view(jobId);
      const entries = (await history(jobId)).length;

      const refused = await post(`/v1/jobs/${jobId}/redrive`, operator.key, { payload: { documentId: 7, mode: "sloppy" } });
      expect(refused.status).toBe(422);
      const problem = (await refused.json()) as { errors: { path: string }[] };
      expect(problem.errors.map((e) => e.path).sort()).toEqual(["/payload/documentId", "/payload/mode"]);
      const unknownStep = await post(`/v1/jobs/${jobId}/redrive`, operator.key, { steps: { nosuch: { skip: { result: {} } } } });
      expect(unknownStep.status).toBe(422);
      expect(((await unknownStep.json()) as { errors: { path: string }[] }).errors[0]!.path).toBe("/steps/nosuch");
      expect(await view(jobId)).toEqual(before);
      expect(await history(jobId)).toHaveLength(entries);

      const running = await submit();
      const notFailed = await post(`/v1/jobs/${running}/redrive`, operator.key);
      expect(notFailed.status).toBe(409);
      // Reading jobs is not operating them.
      expect((await post(`/v1/jobs/${jobId}/redrive`, client.key)).status).toBe(403);
    }, 30_000);

    test("a step skipped with a result is not sent again, and its successor receives the result", async () => {
      const { post, view, sent, sentAtLeast, history, failedAtTransform } = await setup(backend);
      const jobId = await failedAtTransform();
      const response = await post(`/v1/jobs/${jobId}/redrive`, operator.key, { steps: { transform: { skip: { result: { shape: "by hand" } } } } });
      expect(response.status).toBe(200);
      const [deliver] = await sentAtLeast(jobId, "deliver", 1);
      expect(deliver!.results).toEqual({ extract: { text: "hello" }, transform: { shape: "by hand" } });
      expect(sent(jobId, "transform")).toHaveLength(1);
      expect((await view(jobId)).steps.find((s) => s.name === "transform")).toMatchObject({ status: "succeeded", attempts: 1 });
      const redrive = (await history(jobId)).at(-1)!;
      expect(redrive).toMatchObject({ action: "redrive", actor: "operator-ann", detail: { skipped: ["transform"] } });
      expect(redrive.steps).toEqual([
        { step: "transform", status: "succeeded" },
        { step: "deliver", status: "pending" },
      ]);
    }, 30_000);

    test("of redrives racing for one job, one wins and the others are 409; the step goes out once more", async () => {
      const { post, sent, sentAtLeast, view, failedAtTransform } = await setup(backend);
      const jobId = await failedAtTransform();
      const statuses = await Promise.all(Array.from({ length: 4 }, () => post(`/v1/jobs/${jobId}/redrive`, operator.key).then((r) => r.status)));
      expect(statuses.sort()).toEqual([200, 409, 409, 409]);
      await sentAtLeast(jobId, "transform", 2);
      expect((await view(jobId)).redrives).toBe(1);
      // The retry loop's delay passes with nothing more sent.
      await eventually(async () => (await view(jobId)).steps[1]!.status === "initiated", { timeoutMs: 5000, what: "the redriven step sent" });
      expect(sent(jobId, "transform")).toHaveLength(2);
    }, 30_000);
  });
}

describe("pause and resume, on every backend at once", () => {
  test("a paused job sends nothing for 2 s while its running step finishes; resume releases the successor; the listing finds paused jobs", async () => {
    await Promise.all(
      (["memory", "table", "ledger"] as const).map(async (backend) => {
        const { service, post, view, report, sent, sentAtLeast, history, submit } = await setup(backend);
        const jobId = await submit();
        await sentAtLeast(jobId, "extract", 1);
        // Its publish recorded (the job in progress), so that the listing shows the pause after it.
        await eventually(async () => (await view(jobId)).status === "in_progress", { timeoutMs: 5000, what: "the job in progress" });
        const paused = await post(`/v1/jobs/${jobId}/pause`, operator.key);
        expect(paused.status).toBe(200);
        expect((await post(`/v1/jobs/${jobId}/pause`, operator.key)).status).toBe(409);
        const listed = await service.request("/v1/jobs?tenantId=acme&paused=true", { headers: { "x-api-key": client.key } });
        expect({ backend, listed: ((await listed.json()) as { items: { jobId: string }[] }).items.map((j) => j.jobId) }).toEqual({ backend, listed: [jobId] });

        expect((await report(jobId, "extract", { status: "succeeded", result: {} })).outcome).toBe("applied");
        const held = await view(jobId);
        expect(held.steps.map((s) => s.status)).toEqual(["succeeded", "pending", "pending"]);
        expect(held.outbox.filter((o) => !o.stepId.endsWith(".s0"))).toEqual([]);
        // Past the retry loop's delay and several of its rounds: still nothing.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        expect(sent(jobId, "transform")).toHaveLength(0);

        const resumed = await post(`/v1/jobs/${jobId}/resume`, operator.key);
        expect(resumed.status).toBe(200);
        expect(await resumed.json()).toMatchObject({ status: "in_progress", paused: false });
        await sentAtLeast(jobId, "transform", 1);
        const notPaused = await service.request("/v1/jobs?tenantId=acme&paused=true", { headers: { "x-api-key": client.key } });
        expect(((await notPaused.json()) as { items: { jobId: string }[] }).items.map((j) => j.jobId)).not.toContain(jobId);
        const actions = (await history(jobId)).map((e) => [e.action, e.actor, e.dispatched.map((d) => d.step)]);
        expect(actions).toEqual([
          ["accepted", "client", ["extract"]],
          ["pause", "operator-ann", []],
          ["event", "client", []],
          ["resume", "operator-ann", ["transform"]],
        ]);
      }),
    );
  }, 30_000);
});
