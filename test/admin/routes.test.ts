import { describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import { eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createRecordingPublisher } from "../../dev/recording-publisher.ts";
import { bundledRegistry } from "../../src/config/protocols.ts";
import { loadSettings } from "../../src/config/settings.ts";
import { createLogger } from "../../src/logging/logger.ts";
import { createRuntime } from "../../src/runtime.ts";

const KEY = "admin-key-0123456789";
const ADMIN_ENV = { LUCIUS_ADMIN_ENABLED: "true", LUCIUS_ADMIN_API_KEY: KEY, LUCIUS_OUTBOX_MAX_ATTEMPTS: "2", LUCIUS_OUTBOX_RETRY_ENABLED: "false" };

/** A runtime with admin on, a recording publisher, and its log lines captured. */
async function setup(options: { publisher?: boolean; env?: Record<string, string> } = {}) {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  const recording = createRecordingPublisher();
  const runtime = await createRuntime({
    settings: loadSettings({ ...ADMIN_ENV, ...options.env }),
    protocols: bundledRegistry(),
    logger: createLogger({ level: "info", destination }),
    publisher: options.publisher === false ? null : recording.publisher,
  });
  const request = (path: string, init: RequestInit = {}, key: string | null = KEY) =>
    runtime.app.handle(
      new Request(`http://localhost${path}`, {
        ...init,
        headers: { "content-type": "application/json", ...(key ? { "x-api-key": key } : {}), ...(init.headers ?? {}) },
      }),
    );
  const submit = async () => {
    const response = await runtime.app.handle(new Request("http://localhost/v1/commands", { method: "POST", body: JSON.stringify(ingestCommand()) }));
    return ((await response.json()) as { jobId: string }).jobId;
  };
  return { runtime, recording, request, submit, lines };
}

describe("admin endpoints", () => {
  test("answer 404 when LUCIUS_ADMIN_ENABLED is off", async () => {
    const { request } = await startTestRuntime();
    expect((await request("/v1/admin/outbox/stats", { headers: { "x-api-key": KEY } })).status).toBe(404);
  });

  test("answer 401 without a key or with a wrong one, and accept X-API-Key or Bearer", async () => {
    const { request } = await setup();
    for (const response of [await request("/v1/admin/outbox/stats", {}, null), await request("/v1/admin/outbox/stats", {}, "wrong-key-0123456789")]) {
      expect(response.status).toBe(401);
      expect(response.headers.get("content-type")).toBe("application/problem+json");
    }
    expect((await request("/v1/admin/outbox/stats", { headers: { authorization: `Bearer ${KEY}` } }, null)).status).toBe(200);
    expect((await request("/v1/admin/outbox/stats")).status).toBe(200);
  });

  test("list and stats show pending and failed entries with the oldest pending age", async () => {
    const { request, submit, recording, runtime } = await setup();
    recording.failWith("messaging entity not found", false);
    const failedJob = await submit();
    await runtime.dispatcher!.drain();
    recording.heal();
    const pendingJob = await submit();
    await runtime.dispatcher!.drain();
    // The second was sent; make a third stay pending by having no broker answer it.
    recording.failWith("connection refused", true);
    const stuckJob = await submit();
    await runtime.dispatcher!.drain();

    const failed = (await (await request("/v1/admin/outbox?status=failed")).json()) as {
      items: { jobId: string; lastError: string }[];
      nextCursor: string | null;
    };
    expect(failed.items.map((i) => i.jobId)).toEqual([failedJob]);
    expect(failed.items[0]!.lastError).toBe("messaging entity not found");
    const pending = (await (await request("/v1/admin/outbox?status=pending&limit=10")).json()) as { items: { jobId: string }[] };
    expect(pending.items.map((i) => i.jobId)).toEqual([stuckJob]);
    const sent = (await (await request("/v1/admin/outbox?status=sent")).json()) as { items: { jobId: string }[] };
    expect(sent.items.map((i) => i.jobId)).toEqual([pendingJob]);
    const stats = (await (await request("/v1/admin/outbox/stats")).json()) as { pending: number; failed: number; oldestPendingAgeSeconds: number };
    expect(stats).toMatchObject({ pending: 1, failed: 1 });
    expect(stats.oldestPendingAgeSeconds).toBeGreaterThanOrEqual(0);
    expect((await request("/v1/admin/outbox?status=lost")).status).toBe(400);
  });

  test("retrying one failed entry starts it over and publishes it now", async () => {
    const { request, submit, recording, runtime } = await setup();
    recording.failWith("messaging entity not found", false);
    const jobId = await submit();
    await runtime.dispatcher!.drain();
    const entry = (await runtime.store.getJob(jobId))!.outbox[0]!;
    expect(entry.status).toBe("failed");
    recording.heal();
    const response = await request(`/v1/admin/outbox/${entry.outboxId}/retry`, { method: "POST" });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ outboxId: entry.outboxId, status: "sent" });
    expect(recording.published.map((p) => p.message.messageId)).toEqual([entry.outboxId]);
    expect((await runtime.store.getJob(jobId))!.outbox[0]).toMatchObject({ status: "sent", attempts: 1 });
  });

  test("retrying one entry: unknown is 404, already sent is 409", async () => {
    const { request, submit, runtime } = await setup();
    const jobId = await submit();
    await runtime.dispatcher!.drain();
    const { outboxId } = (await runtime.store.getJob(jobId))!.outbox[0]!;
    expect((await request(`/v1/admin/outbox/${outboxId}/retry`, { method: "POST" })).status).toBe(409);
    expect((await request(`/v1/admin/outbox/${jobId}.s9.d0/retry`, { method: "POST" })).status).toBe(404);
    expect((await request(`/v1/admin/outbox/nonsense/retry`, { method: "POST" })).status).toBe(404);
  });

  test("retry all publishes pending entries now, and failed ones when asked", async () => {
    const { request, submit, recording, runtime } = await setup();
    recording.failWith("messaging entity not found", false);
    const failed = await submit();
    await runtime.dispatcher!.drain();
    // A broker that refuses: the first directive's attempt fails, the next waits for the sweeper.
    recording.failWith("connection refused", true);
    const pending = [await submit(), await submit()];
    await runtime.dispatcher!.drain();
    recording.heal();

    const first = await request("/v1/admin/outbox/retry", { method: "POST", body: JSON.stringify({}) });
    expect(first.status).toBe(202);
    expect(await first.json()).toEqual({ scheduled: 2, failedReset: 0 });
    await eventually(async () => {
      for (const jobId of pending) if ((await runtime.store.getJob(jobId))!.outbox[0]!.status !== "sent") return false;
      return true;
    });
    expect((await runtime.store.getJob(failed))!.outbox[0]!.status).toBe("failed");

    const second = await request("/v1/admin/outbox/retry", { method: "POST", body: JSON.stringify({ includeFailed: true, limit: 10 }) });
    expect(await second.json()).toEqual({ scheduled: 1, failedReset: 1 });
    await eventually(async () => (await runtime.store.getJob(failed))!.outbox[0]!.status === "sent");
    const { outboxId } = (await runtime.store.getJob(failed))!.outbox[0]!;
    expect(recording.published.filter((p) => p.message.messageId === outboxId)).toHaveLength(1);
  });

  test("retry all drains every pending entry, not one batch, and answers before the drain is done", async () => {
    const { request, submit, recording, runtime } = await setup({ env: { LUCIUS_OUTBOX_RETRY_BATCH_SIZE: "10", LUCIUS_OUTBOX_RETRY_ENABLED: "false" } });
    recording.failWith("connection refused", true);
    const jobIds = await Promise.all(Array.from({ length: 35 }, () => submit()));
    await runtime.dispatcher!.drain();
    recording.heal();
    const release = recording.stall();
    const response = await request("/v1/admin/outbox/retry", { method: "POST", body: "{}" });
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ scheduled: 35, failedReset: 0 });
    // Answered while the first batch is still held by the broker.
    expect(recording.published).toHaveLength(0);
    release();
    await eventually(async () => (await runtime.store.outboxStats(new Date())).pending === 0, { what: "nothing pending" });
    for (const jobId of jobIds) expect((await runtime.store.getJob(jobId))!.outbox[0]!.status).toBe("sent");
    expect(new Set(recording.published.map((p) => p.message.messageId)).size).toBe(35);
    expect(recording.published).toHaveLength(35);
  });

  test("retry without a broker configured is a 503 problem", async () => {
    const { request } = await setup({ publisher: false });
    const response = await request("/v1/admin/outbox/retry", { method: "POST", body: "{}" });
    expect(response.status).toBe(503);
    expect(((await response.json()) as { type: string }).type).toEndWith("publishing-disabled");
  });

  test("every admin action is logged by what it did, never with the key", async () => {
    const { request, lines } = await setup();
    await request("/v1/admin/outbox/stats");
    await request("/v1/admin/outbox?status=failed");
    await request("/v1/admin/outbox/retry", { method: "POST", body: "{}" });
    await request("/v1/admin/outbox/stats", {}, "wrong-key-0123456789");
    await eventually(() => lines.filter((l) => String(l.msg).startsWith("admin:")).length >= 4);
    expect(lines.filter((l) => String(l.msg).startsWith("admin:")).map((l) => l.action ?? "refused")).toEqual(["stats", "list", "retry-all", "refused"]);
    expect(JSON.stringify(lines)).not.toContain(KEY);
    expect(JSON.stringify(lines)).not.toContain("wrong-key-0123456789");
  });
});

test("a directive withdrawn because its job was cancelled is not failed, not counted, and not sent by an admin retry", async () => {
  const { request, submit, recording, runtime } = await setup();
  recording.failWith("connection refused", true);
  const jobId = await submit();
  await runtime.dispatcher!.drain();
  const cancelled = await runtime.app.handle(new Request(`http://localhost/v1/jobs/${jobId}/cancel`, { method: "POST" }));
  expect(cancelled.status).toBe(200);
  recording.heal();
  const entry = (await runtime.store.getJob(jobId))!.outbox[0]!;
  expect(entry.status).toBe("withdrawn");
  expect(await (await request("/v1/admin/outbox/stats")).json()).toMatchObject({ pending: 0, failed: 0 });
  expect(((await (await request("/v1/admin/outbox?status=failed")).json()) as { items: unknown[] }).items).toEqual([]);
  expect(((await (await request("/v1/admin/outbox?status=withdrawn")).json()) as { items: { outboxId: string }[] }).items.map((e) => e.outboxId)).toEqual([
    entry.outboxId,
  ]);
  expect((await request(`/v1/admin/outbox/${entry.outboxId}/retry`, { method: "POST" })).status).toBe(409);
  expect(await (await request("/v1/admin/outbox/retry", { method: "POST", body: JSON.stringify({ includeFailed: true }) })).json()).toEqual({
    scheduled: 0,
    failedReset: 0,
  });
  await runtime.dispatcher!.drain();
  expect(recording.published).toHaveLength(0);
});
