/**
 * Webhooks through the outbox, to a real receiver that verifies each delivery with the
 * `standardwebhooks` package: the events a callback asks for, signed with every secret of the
 * tenant; retried under the same webhook-id until the receiver takes it; no redirect followed;
 * private addresses refused unless allowed; bad callbacks refused at intake; and, with the
 * service killed after a job ended but before its webhook went out, delivered after the restart.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { startService } from "../support/service-process.ts";
import { sharedLedger } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("webhooks");
const cleanups = cleanupsAfterEach();

const OLD_SECRET = `whsec_${Buffer.from("an older secret of 32 bytes!!!!!").toString("base64")}`;
const NEW_SECRET = `whsec_${Buffer.from("the newer secret of 32 bytes!!!!").toString("base64")}`;
const secretsFile = join(dir, "secrets.json");
writeFileSync(secretsFile, JSON.stringify({ acme: [OLD_SECRET, NEW_SECRET] }));
const { protocolsFile, protocols } = writeProtocols(dir, [
  { requestType: "document.hook", version: 1, steps: ["first", "second"].map((name) => ({ name, topic: name, payloadSchema: { type: "object" } })) },
]);
const TOPICS = { first: ["workers"], second: ["workers"] };

interface Delivery {
  id: string;
  type: string;
  data: Record<string, unknown>;
  verified: boolean[];
  path: string;
}

/** A receiver that verifies every delivery with each secret and answers what `answer` says. */
function startReceiver(answer: (delivery: Delivery, count: number) => Response | Promise<Response> = () => new Response(null, { status: 204 })) {
  const deliveries: Delivery[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const body = await request.text();
      const headers = Object.fromEntries(request.headers);
      const verified = [OLD_SECRET, NEW_SECRET].map((secret) => {
        try {
          new Webhook(secret).verify(body, headers);
          return true;
        } catch {
          return false;
        }
      });
      const parsed = JSON.parse(body) as { type: string; data: Record<string, unknown> };
      const delivery = { id: headers["webhook-id"] ?? "", type: parsed.type, data: parsed.data, verified, path: new URL(request.url).pathname };
      deliveries.push(delivery);
      return answer(delivery, deliveries.length);
    },
  });
  cleanups.push(() => server.stop(true));
  return { deliveries, url: `http://127.0.0.1:${server.port}` };
}

async function setup(env: Record<string, string> = {}) {
  const bus = await startBroker({ topics: TOPICS });
  cleanups.push(() => bus.stop());
  const service = await startTestRuntime({
    protocols,
    publisherFromSettings: true,
    env: {
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_WEBHOOK_SECRETS_FILE: secretsFile,
      LUCIUS_WEBHOOK_ALLOW_HTTP: "true",
      LUCIUS_WEBHOOK_ALLOW_HOSTS: "127.0.0.1",
      LUCIUS_OUTBOX_RETRY_DELAY: "0.5",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.2",
      ...env,
    },
  });
  service.runtime.start();
  cleanups.push(() => service.runtime.stop());
  const submit = async (callback: unknown, tenantId = "acme") => service.postCommand({ requestType: "document.hook", tenantId, payload: {}, callback });
  const jobOf = async (callback: unknown) => {
    const response = await submit(callback);
    expect(response.status).toBe(202);
    return ((await response.json()) as { jobId: string }).jobId;
  };
  const report = (jobId: string, index: number, event: Record<string, unknown>) =>
    service.request(`/v1/jobs/${jobId}/steps/${jobId}.s${index}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: crypto.randomUUID(), ...event }),
    });
  const webhookEntries = async (jobId: string) => (await service.runtime.store.getJob(jobId))!.outbox.filter((o) => o.webhook);
  return { service, submit, jobOf, report, webhookEntries };
}

describe("webhooks", () => {
  test("the events a callback asks for, each signed with every secret of the tenant and verified by standardwebhooks", async () => {
    const receiver = startReceiver();
    const { jobOf, report, webhookEntries } = await setup();
    const jobId = await jobOf({ url: `${receiver.url}/hooks`, events: ["step.succeeded", "job.succeeded"] });
    await report(jobId, 0, { status: "succeeded", result: { pages: 2 } });
    await report(jobId, 1, { status: "succeeded" });
    await eventually(() => receiver.deliveries.length >= 3, { what: "three deliveries" });
    // Deliveries go out side by side and may arrive in any order: `seq` orders them.
    const bySeq = [...receiver.deliveries].sort((a, b) => Number(a.data.seq) - Number(b.data.seq));
    expect(bySeq.map((d) => [d.type, d.data.step ?? null])).toEqual([
      ["step.succeeded", "first"],
      ["step.succeeded", "second"],
      ["job.succeeded", null],
    ]);
    expect(receiver.deliveries.every((d) => d.verified.every(Boolean))).toBe(true);
    expect(bySeq[0]!.data).toMatchObject({ jobId, tenantId: "acme", result: { pages: 2 }, seq: 2 });
    expect(bySeq[2]!.data).toMatchObject({ jobId, status: "succeeded" });
    await eventually(async () => (await webhookEntries(jobId)).every((o) => o.status === "sent"), { what: "the entries sent" });
    expect(new Set(receiver.deliveries.map((d) => d.id)).size).toBe(3);
  });

  test("a receiver answering 500, then 200, gets the same webhook-id twice and the entry ends sent; a redirect is not followed", async () => {
    const flaky = startReceiver((_, count) => new Response("busy", { status: count === 1 ? 500 : 200 }));
    const { jobOf, report, webhookEntries } = await setup();
    const jobId = await jobOf({ url: `${flaky.url}/hooks` });
    await report(jobId, 0, { status: "failed", error: { code: "x", message: "" } });
    await eventually(async () => (await webhookEntries(jobId))[0]?.status === "sent", { timeoutMs: 10_000, what: "the delivery sent" });
    expect(flaky.deliveries.map((d) => d.type)).toEqual(["job.failed", "job.failed"]);
    expect(flaky.deliveries[0]!.id).toBe(flaky.deliveries[1]!.id);
    expect((await webhookEntries(jobId))[0]).toMatchObject({ attempts: 2, lastError: "the receiver answered 500: busy" });

    const redirecting = startReceiver((delivery) =>
      delivery.path === "/hooks" ? new Response(null, { status: 307, headers: { location: "/elsewhere" } }) : new Response(null, { status: 204 }),
    );
    const other = await jobOf({ url: `${redirecting.url}/hooks` });
    await report(other, 0, { status: "failed", error: { code: "x", message: "" } });
    await eventually(async () => (await webhookEntries(other))[0]?.status === "failed", { what: "the delivery failed for good" });
    expect(redirecting.deliveries.map((d) => d.path)).toEqual(["/hooks"]);
    expect((await webhookEntries(other))[0]!.lastError).toContain("redirects are not followed");
  });

  test("a private address is refused unless its host is allowed; bad callbacks are refused at intake", async () => {
    const receiver = startReceiver();
    const { jobOf, submit, report, webhookEntries } = await setup({ LUCIUS_WEBHOOK_ALLOW_HOSTS: "" });
    const jobId = await jobOf({ url: `${receiver.url}/hooks` });
    await report(jobId, 0, { status: "failed", error: { code: "x", message: "" } });
    await eventually(async () => (await webhookEntries(jobId))[0]?.status === "failed", { what: "the delivery refused" });
    expect((await webhookEntries(jobId))[0]!.lastError).toBe("127.0.0.1 is a refused address");
    // A name that resolves to loopback is refused as well: the check is on the address connected to.
    const named = await jobOf({ url: receiver.url.replace("127.0.0.1", "localhost") });
    await report(named, 0, { status: "failed", error: { code: "x", message: "" } });
    await eventually(async () => (await webhookEntries(named))[0]?.status === "failed", { what: "the named delivery refused" });
    expect((await webhookEntries(named))[0]!.lastError).toBe("localhost resolves to a refused address");
    expect(receiver.deliveries).toHaveLength(0);

    const refused = async (callback: unknown, tenantId = "acme") => {
      const response = await submit(callback, tenantId);
      expect(response.status).toBe(422);
      return ((await response.json()) as { errors: { path: string; message: string }[] }).errors;
    };
    expect(await refused({ url: "not a url" })).toEqual([{ path: "/callback/url", message: "must be an absolute URL" }]);
    expect(await refused({ url: "https://user:pw@hooks.example/x" })).toEqual([{ path: "/callback/url", message: "must not carry credentials" }]);
    expect((await refused({ url: `https://hooks.example/${"x".repeat(2048)}` }))[0]!.path).toBe("/callback/url");
    expect((await refused({ url: "https://hooks.example/x" }, "globex"))[0]).toMatchObject({ path: "/callback" });
    expect((await refused({ url: "https://hooks.example/x", events: ["job.exploded"] }))[0]!.path).toContain("/callback/events");
  });

  test("https only unless LUCIUS_WEBHOOK_ALLOW_HTTP", async () => {
    const { submit } = await setup({ LUCIUS_WEBHOOK_ALLOW_HTTP: "false" });
    const response = await submit({ url: "http://hooks.example/x" });
    expect(response.status).toBe(422);
    expect(((await response.json()) as { errors: unknown[] }).errors).toEqual([{ path: "/callback/url", message: "must be https" }]);
  });

  test("ledger: killed (SIGKILL) after the job ended and before its webhook was answered, the service delivers it after the restart, under the same id", async () => {
    let held = true;
    const receiver = startReceiver(() =>
      // The first delivery is never answered: the service dies waiting.
      held ? new Promise<Response>(() => {}) : new Response(null, { status: 200 }),
    );
    const bus = await startBroker({ topics: TOPICS });
    cleanups.push(() => bus.stop());
    const ledger = await sharedLedger();
    const env = {
      ...ledger.env,
      LUCIUS_PROTOCOLS_FILE: protocolsFile,
      LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
      LUCIUS_WEBHOOK_SECRETS_FILE: secretsFile,
      LUCIUS_WEBHOOK_ALLOW_HTTP: "true",
      LUCIUS_WEBHOOK_ALLOW_HOSTS: "127.0.0.1",
      // The fast path delivers (the retry loop would take an entry only 6 s after it was written).
      LUCIUS_OUTBOX_RETRY_DELAY: "6",
      LUCIUS_OUTBOX_RETRY_INTERVAL: "0.2",
    };
    const first = await startService(env);
    cleanups.push(() => first.proc.kill("SIGKILL"));
    const accepted = await fetch(new URL("/v1/commands", first.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ requestType: "document.hook", tenantId: "acme", payload: {}, callback: { url: `${receiver.url}/hooks` } }),
    });
    const { jobId } = (await accepted.json()) as { jobId: string };
    await fetch(new URL(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, first.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "e1", status: "failed", error: { code: "x", message: "" } }),
    });
    await eventually(() => receiver.deliveries.length >= 1, { what: "the first, unanswered delivery" });
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    held = false;

    const second = await startService(env);
    cleanups.push(() => second.proc.kill("SIGKILL"));
    const { store } = ledger;
    await eventually(async () => (await store.getJob(jobId))!.outbox.find((o) => o.webhook)?.status === "sent", {
      timeoutMs: 15_000,
      what: "delivered after the restart",
    });
    expect(receiver.deliveries.map((d) => [d.type, d.id])).toEqual([
      ["job.failed", `${jobId}.w2.0`],
      ["job.failed", `${jobId}.w2.0`],
    ]);
  }, 30_000);
});
