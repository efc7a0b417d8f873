/**
 * Streams of job changes, read by a real EventSource client over a socket: a snapshot, each
 * change in order, the end; Last-Event-ID resumes exactly; a tenant's stream; the bounds (too
 * many streams, a client that does not read, shutdown); and two instances on `ledger`, where a
 * change made through one reaches a stream held by the other within a second.
 */
import { describe, expect, test } from "bun:test";
import { EventSource } from "eventsource";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { sharedLedger } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("streams");
const cleanups = cleanupsAfterEach();

const { protocols } = writeProtocols(dir, [
  { requestType: "document.stream", version: 1, steps: ["read", "write"].map((name) => ({ name, topic: name, payloadSchema: { type: "object" } })) },
]);

async function serve(env: Record<string, string> = {}) {
  const service = await startTestRuntime({ protocols, env });
  service.runtime.start();
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: service.runtime.fetch, idleTimeout: 0 });
  cleanups.push(async () => {
    await service.runtime.stop();
    await server.stop(true);
  });
  const base = `http://127.0.0.1:${server.port}`;
  const submit = async () => {
    const response = await service.postCommand({ requestType: "document.stream", tenantId: "acme", payload: {} });
    return ((await response.json()) as { jobId: string }).jobId;
  };
  const report = async (jobId: string, index: number, event: Record<string, unknown>) =>
    service.request(`/v1/jobs/${jobId}/steps/${jobId}.s${index}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: crypto.randomUUID(), ...event }),
    });
  return { service, base, submit, report };
}

interface Received {
  type: string;
  id: string;
  data: Record<string, unknown>;
}

/** An EventSource on `url`, collecting every event until `end` (then it closes itself). */
function listen(url: string) {
  const received: Received[] = [];
  const source = new EventSource(url);
  cleanups.push(() => source.close());
  let ended!: () => void;
  const end = new Promise<void>((resolve) => (ended = resolve));
  for (const type of ["snapshot", "job", "step", "progress", "end"]) {
    source.addEventListener(type, (event) => {
      received.push({ type, id: event.lastEventId, data: JSON.parse(event.data) });
      if (type === "end") {
        source.close();
        ended();
      }
    });
  }
  const opened = new Promise<void>((resolve) => source.addEventListener("open", () => resolve()));
  return { received, source, end, opened };
}

describe("streams", () => {
  test("a job's stream, read by an EventSource: the snapshot, every change in order with its sequence number, progress, then the end", async () => {
    const { base, submit, report } = await serve();
    const jobId = await submit();
    const stream = listen(`${base}/v1/jobs/${jobId}/stream`);
    await eventually(() => stream.received.length >= 1, { what: "the snapshot" });
    await report(jobId, 0, { status: "progress", percent: 50 });
    await report(jobId, 0, { status: "succeeded", result: { text: "x" } });
    await report(jobId, 1, { status: "succeeded" });
    await stream.end;
    expect(stream.received.map((e) => [e.type, e.id])).toEqual([
      ["snapshot", "1"],
      ["progress", "1"],
      // Without a broker nothing marks the job started: the first event does (its status moves).
      ["job", "2"],
      ["job", "3"],
      ["end", "3"],
    ]);
    expect(stream.received[0]!.data).toMatchObject({ jobId, status: "accepted", seq: 1 });
    expect(stream.received[1]!.data).toMatchObject({ step: "read", progress: { percent: 50 } });
    expect(stream.received[2]!.data).toMatchObject({ seq: 2, action: "event", step: "read", status: "succeeded", dispatched: [{ step: "write" }] });
    expect(stream.received[3]!.data).toMatchObject({ seq: 3, jobStatus: "succeeded" });
  });

  test("Last-Event-ID resumes after that change, without a gap or a repeat; after the final change it answers 204", async () => {
    const { base, submit, report } = await serve();
    const jobId = await submit();
    await report(jobId, 0, { status: "succeeded" });
    await report(jobId, 1, { status: "succeeded" });
    const resumed = await fetch(`${base}/v1/jobs/${jobId}/stream`, { headers: { "last-event-id": "1" } });
    expect(resumed.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const text = await resumed.text();
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(ids).toEqual([2, 3]);
    expect(text).not.toContain("event: snapshot");
    expect(text.trimEnd().endsWith(`data: {"jobId":"${jobId}","status":"succeeded"}`)).toBe(true);
    expect((await fetch(`${base}/v1/jobs/${jobId}/stream`, { headers: { "last-event-id": "3" } })).status).toBe(204);
  });

  test("a tenant's stream carries every change of its jobs, narrowed by request type and status", async () => {
    const { base, submit, report } = await serve();
    const all = listen(`${base}/v1/events?tenantId=acme`);
    const ended = listen(`${base}/v1/events?tenantId=acme&status=succeeded`);
    await Promise.all([all.opened, ended.opened]);
    const [a, b] = [await submit(), await submit()];
    await report(a, 0, { status: "succeeded" });
    await report(a, 1, { status: "succeeded" });
    await report(b, 0, { status: "failed", error: { code: "x", message: "" } });
    await eventually(() => all.received.length >= 5 && ended.received.length >= 1, { what: "the tenant's events" });
    expect(all.received.map((e) => e.id)).toEqual([`${a}/1`, `${b}/1`, `${a}/2`, `${a}/3`, `${b}/2`]);
    expect(ended.received.map((e) => [e.id, e.data.jobStatus])).toEqual([[`${a}/3`, "succeeded"]]);
    expect((await fetch(`${base}/v1/events?tenantId=acme&status=nope`)).status).toBe(400);
  });

  test("bounds: past LUCIUS_MAX_STREAMS a stream is 503 with Retry-After; a client that reads nothing is dropped; shutdown ends every stream", async () => {
    const { service, submit } = await serve({ LUCIUS_MAX_STREAMS: "2" });
    const jobId = await submit();
    // In process: nobody reads these bodies.
    const held = [await service.request(`/v1/jobs/${jobId}/stream`), await service.request(`/v1/events?tenantId=acme`)];
    expect(held.map((r) => r.status)).toEqual([200, 200]);
    const refused = await service.request(`/v1/jobs/${jobId}/stream`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("5");
    expect(service.runtime.hub.size()).toBe(2);
    // 2 MB of progress for a client that reads none of it: dropped past 1 MB.
    const progress = { percent: 1, message: "x".repeat(1000), at: new Date().toISOString() };
    for (let i = 0; i < 2000; i++)
      service.runtime.hub.publish({ kind: "progress", tenantId: "acme", jobId, requestType: "document.stream", step: "read", stepId: `${jobId}.s0`, progress });
    expect(service.runtime.hub.size()).toBe(0);
    expect((await service.request(`/v1/jobs/${jobId}/stream`)).status).toBe(200);
    expect(service.runtime.hub.size()).toBe(1);
    await service.runtime.stop();
    expect(service.runtime.hub.size()).toBe(0);
  });

  test("two instances on ledger: a change made through one reaches a stream held by the other within a second", async () => {
    const { env } = await sharedLedger();
    const [one, other] = [await serve(env), await serve(env)];
    const jobId = await one.submit();
    const stream = listen(`${other.base}/v1/jobs/${jobId}/stream`);
    await eventually(() => stream.received.length >= 1, { what: "the snapshot" });
    const latencies: number[] = [];
    for (const index of [0, 1]) {
      const before = stream.received.length;
      const sent = performance.now();
      expect((await one.report(jobId, index, { status: "succeeded" })).status).toBe(202);
      await eventually(() => stream.received.length > before, { timeoutMs: 3000, intervalMs: 5, what: "the change on the other instance" });
      latencies.push(performance.now() - sent);
    }
    await stream.end;
    expect(stream.received.map((e) => e.type)).toEqual(["snapshot", "job", "job", "end"]);
    expect(Math.max(...latencies)).toBeLessThan(1000);
  }, 20_000);
});
