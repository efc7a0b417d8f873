/** LUCIUS_TENANT_RATE_LIMIT: a bucket per tenant; one noisy tenant does not starve the others. */
import { describe, expect, test } from "bun:test";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { createTenantRateLimit } from "../../src/commands/tenant-rate-limit.ts";

describe("tenant rate limit", () => {
  test("a burst of twice the rate passes, the next waits for a token, and tokens come back with time", () => {
    let nowMs = 0;
    const limit = createTenantRateLimit(5, () => nowMs);
    const taken = Array.from({ length: 11 }, () => limit.take("acme"));
    expect(taken.slice(0, 10)).toEqual(Array(10).fill(0));
    expect(taken[10]).toBe(1);
    expect(limit.take("globex")).toBe(0);
    nowMs += 200; // one token at 5 per second
    expect(limit.take("acme")).toBe(0);
    expect(limit.take("acme")).toBe(1);
  });

  test("over HTTP: the tenant over its rate gets 429 with Retry-After; another tenant is still accepted", async () => {
    const svc = await startTestRuntime({ env: { LUCIUS_TENANT_RATE_LIMIT: "1" } });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await svc.postCommand(ingestCommand())).status);
    expect(statuses).toEqual([202, 202, 429]);
    const refused = await svc.postCommand(ingestCommand());
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(((await refused.json()) as { type: string }).type).toBe("urn:lucius:problem:rate-limited");
    expect((await svc.postCommand(ingestCommand({ tenantId: "globex" }))).status).toBe(202);
  });

  test("off by default", async () => {
    const svc = await startTestRuntime();
    for (let i = 0; i < 5; i++) expect((await svc.postCommand(ingestCommand())).status).toBe(202);
  });
});
