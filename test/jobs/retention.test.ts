/**
 * Retention through the service, with an injected clock: an idempotency key holds its job for
 * LUCIUS_IDEMPOTENCY_TTL, ended jobs go after LUCIUS_JOB_RETENTION, open jobs never do, and the
 * memory backend refuses work with 503 when its bound is full of open jobs.
 */
import { describe, expect, test } from "bun:test";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { storeFor } from "../support/stores.ts";

const HOUR = 3600_000;

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`retention: ${backend}`, () => {
    test("a key replays its job within the TTL and starts a new one after; ended jobs go after the retention, open ones stay", async () => {
      let offsetMs = 0;
      const svc = await startTestRuntime({
        store: await storeFor(backend),
        env: { LUCIUS_IDEMPOTENCY_TTL: "24h", LUCIUS_JOB_RETENTION: "7d" },
        now: () => new Date(Date.now() + offsetMs),
      });
      const submit = async (key: string) => {
        const response = await svc.postCommand(ingestCommand(), { "idempotency-key": key });
        const { jobId } = (await response.json()) as { jobId: string };
        return { httpStatus: response.status, replayed: response.headers.get("idempotent-replayed") === "true", jobId };
      };
      const first = await submit("k-1");
      offsetMs += 23 * HOUR;
      expect(await submit("k-1")).toMatchObject({ httpStatus: 202, replayed: true, jobId: first.jobId });
      offsetMs += 2 * HOUR;
      const renewed = await submit("k-1");
      expect(renewed).toMatchObject({ httpStatus: 202, replayed: false });
      expect(renewed.jobId).not.toBe(first.jobId);

      const open = await submit("k-open");
      expect((await svc.request(`/v1/jobs/${first.jobId}/cancel`, { method: "POST" })).status).toBe(200);
      offsetMs += 6 * 24 * HOUR;
      // Six days on: both keys in use expired (the first record of k-1 was replaced, not counted); no job ended long enough.
      expect(await svc.runtime.retention.tick()).toEqual({ jobs: 0, keys: 2 });
      offsetMs += 2 * 24 * HOUR;
      // The cancelled job has now been ended for 8 days.
      expect(await svc.runtime.retention.tick()).toEqual({ jobs: 1, keys: 0 });
      expect((await svc.request(`/v1/jobs/${first.jobId}`)).status).toBe(404);
      for (const jobId of [renewed.jobId, open.jobId]) expect((await svc.request(`/v1/jobs/${jobId}`)).status).toBe(200);
      const listed = (await (await svc.request("/v1/jobs?tenantId=acme")).json()) as { items: { jobId: string }[] };
      expect(listed.items.map((i) => i.jobId).sort()).toEqual([renewed.jobId, open.jobId].sort());
      expect(await svc.runtime.retention.tick()).toEqual({ jobs: 0, keys: 0 });
    });
  });
}

test("LUCIUS_JOB_RETENTION=0 keeps ended jobs", async () => {
  let offsetMs = 0;
  const svc = await startTestRuntime({ env: { LUCIUS_JOB_RETENTION: "0" }, now: () => new Date(Date.now() + offsetMs) });
  const { jobId } = (await (await svc.postCommand(ingestCommand())).json()) as { jobId: string };
  await svc.request(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
  offsetMs += 3650 * 24 * HOUR;
  expect((await svc.runtime.retention.tick()).jobs).toBe(0);
  expect((await svc.request(`/v1/jobs/${jobId}`)).status).toBe(200);
});

test("memory full of open jobs: 503 storage-full with Retry-After; an ended job makes room", async () => {
  const svc = await startTestRuntime({ env: { LUCIUS_MEMORY_MAX_JOBS: "100" } });
  const ids: string[] = [];
  for (let i = 0; i < 100; i++) ids.push(((await (await svc.postCommand(ingestCommand())).json()) as { jobId: string }).jobId);
  const refused = await svc.postCommand(ingestCommand());
  expect(refused.status).toBe(503);
  expect(refused.headers.get("retry-after")).toBe("5");
  expect(((await refused.json()) as { type: string }).type).toBe("urn:lucius:problem:storage-full");
  await svc.request(`/v1/jobs/${ids[0]}/cancel`, { method: "POST" });
  expect((await svc.postCommand(ingestCommand())).status).toBe(202);
});
