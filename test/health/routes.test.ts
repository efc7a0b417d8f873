import { describe, expect, test } from "bun:test";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createRecordingPublisher } from "../../dev/recording-publisher.ts";
import { StorageUnavailableError } from "../../src/domain/errors.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

describe("health", () => {
  test("/healthz answers 200 while the process runs", async () => {
    const { request } = await startTestRuntime();
    expect((await request("/healthz")).status).toBe(200);
  });

  test("/readyz is 200 with storage and publisher answering", async () => {
    const { request } = await startTestRuntime({ publisher: createRecordingPublisher().publisher });
    const response = await request("/readyz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ready", checks: { storage: "ok", publisher: "ok", outbox: "ok" } });
  });

  test("/readyz degrades once the oldest pending entry is older than LUCIUS_READY_MAX_PENDING_AGE", async () => {
    const recording = createRecordingPublisher();
    recording.rejectWhen(() => ({ ok: false, error: "server busy", retryable: true }));
    let clock = new Date("2026-01-01T00:00:00.000Z");
    const { request, postCommand, runtime } = await startTestRuntime({
      publisher: recording.publisher,
      env: { LUCIUS_READY_MAX_PENDING_AGE: "60" },
      now: () => clock,
    });
    await postCommand(ingestCommand());
    await runtime.dispatcher!.drain();
    expect((await request("/readyz")).status).toBe(200);
    clock = new Date(clock.getTime() + 61_000);
    const response = await request("/readyz");
    expect(response.status).toBe(503);
    expect(((await response.json()) as { detail: string; checks: { outbox: string } }).checks.outbox).toContain("oldest pending entry");
  });

  test("/readyz is 503 naming storage when the store does not answer", async () => {
    const store = {
      ...createMemoryStore(),
      ping: async () => {
        throw new StorageUnavailableError("connect ECONNREFUSED");
      },
    };
    const { request } = await startTestRuntime({ store });
    const response = await request("/readyz");
    expect(response.status).toBe(503);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
    const body = (await response.json()) as { detail: string; checks: Record<string, string> };
    expect(body.detail).toContain("storage");
    expect(body.checks.storage).toStartWith("failing");
  });

  test("/readyz is 503 naming the publisher when the broker is down", async () => {
    const recording = createRecordingPublisher();
    recording.failWith("connection refused", true);
    const { request } = await startTestRuntime({ publisher: recording.publisher });
    const response = await request("/readyz");
    expect(response.status).toBe(503);
    expect(((await response.json()) as { detail: string }).detail).toBe("failing: publisher");
  });

  test("/readyz is 503 once shutdown began; stop() waits for the in-flight publish and closes the publisher", async () => {
    const recording = createRecordingPublisher();
    const release = recording.stall();
    const { request, postCommand, runtime } = await startTestRuntime({ publisher: recording.publisher });
    const { jobId } = (await (await postCommand(ingestCommand())).json()) as { jobId: string };
    let stopped = false;
    const stopping = runtime.stop().then(() => (stopped = true));
    expect((await request("/readyz")).status).toBe(503);
    expect(stopped).toBe(false);
    release();
    await stopping;
    expect(recording.closed).toBe(true);
    expect((await runtime.store.getJob(jobId))?.outbox[0]?.status).toBe("sent");
  });
});
