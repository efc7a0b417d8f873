import { describe, expect, test } from "bun:test";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";

async function submit(post: (body: unknown) => Promise<Response>, overrides: Record<string, unknown> = {}) {
  const response = await post(ingestCommand(overrides));
  expect(response.status).toBe(202);
  return ((await response.json()) as { jobId: string }).jobId;
}

describe("GET /v1/jobs/{jobId}", () => {
  test("returns the job with its steps and outbox in the contract's shape", async () => {
    const { postCommand, request } = await startTestRuntime();
    const jobId = await submit(postCommand);
    const response = await request(`/v1/jobs/${jobId}`);
    expect(response.status).toBe(200);
    const view = (await response.json()) as Record<string, unknown> & { steps: unknown[]; outbox: unknown[] };
    expect(Object.keys(view).sort()).toEqual([
      "correlationId",
      "createdAt",
      "jobId",
      "outbox",
      "paused",
      "redrives",
      "requestType",
      "seq",
      "status",
      "steps",
      "tenantId",
      "updatedAt",
    ]);
    expect(view).toMatchObject({ jobId, tenantId: "acme", requestType: "document.ingest", correlationId: "c-42", status: "accepted" });
    expect(Object.keys(view.steps[0] as object).sort()).toEqual([
      "after",
      "attempts",
      "compensation",
      "deadlineAt",
      "error",
      "finishedAt",
      "index",
      "name",
      "progress",
      "result",
      "startedAt",
      "status",
      "stepId",
      "topic",
      "updatedAt",
    ]);
    // Each step's place in the graph: document.ingest is a line.
    expect((view.steps as { name: string; after: string[]; compensation: boolean }[]).map((s) => [s.name, s.after, s.compensation])).toEqual([
      ["ocr", [], false],
      ["embed", ["ocr"], false],
      ["enrich", ["embed"], false],
    ]);
    expect(Object.keys(view.outbox[0] as object).sort()).toEqual([
      "attempts",
      "lastError",
      "nextAttemptAt",
      "outboxId",
      "partitionKey",
      "sentAt",
      "status",
      "stepId",
      "topic",
    ]);
  });

  test("an unknown job is a 404 problem", async () => {
    const { request } = await startTestRuntime();
    const response = await request("/v1/jobs/0190d9a0-0000-7000-8000-000000000000");
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
    expect(((await response.json()) as { type: string }).type).toEndWith("not-found");
  });
});

describe("GET /v1/jobs?tenantId=", () => {
  test("narrows by status, requestType and correlationId; items carry status and updatedAt", async () => {
    const { postCommand, request } = await startTestRuntime();
    const first = await submit(postCommand, { correlationId: "order-7" });
    await submit(postCommand, { correlationId: "order-8" });
    expect((await request(`/v1/jobs/${first}/cancel`, { method: "POST" })).status).toBe(200);
    const list = async (query: string) =>
      (await (await request(`/v1/jobs?tenantId=acme&${query}`)).json()) as { items: { jobId: string; status: string; updatedAt: string }[] };
    expect((await list("status=cancelled")).items).toEqual([expect.objectContaining({ jobId: first, status: "cancelled", updatedAt: expect.any(String) })]);
    expect((await list("correlationId=order-7")).items.map((item) => item.jobId)).toEqual([first]);
    expect((await list("requestType=document.ocr")).items).toEqual([]);
    expect((await list("status=accepted&correlationId=order-7")).items).toEqual([]);
    const bad = await request("/v1/jobs?tenantId=acme&status=lost");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { errors: { path: string; message: string }[] }).errors[0]).toEqual({
      path: "/query/status",
      message: "must be one of: accepted, in_progress, succeeded, failed, cancelled",
    });
  });

  test("lists the tenant's jobs newest first, paged with a cursor until nextCursor is null", async () => {
    const { postCommand, request } = await startTestRuntime();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submit(postCommand, { correlationId: `c-${i}` }));
    await submit(postCommand, { tenantId: "globex" });

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = `/v1/jobs?tenantId=acme&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = (await (await request(query)).json()) as { items: { jobId: string; tenantId: string }[]; nextCursor: string | null };
      expect(page.items.every((item) => item.tenantId === "acme")).toBe(true);
      seen.push(...page.items.map((item) => item.jobId));
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());
  });

  test("a tenant without jobs gets an empty list", async () => {
    const { request } = await startTestRuntime();
    expect(await (await request("/v1/jobs?tenantId=nobody")).json()).toEqual({ items: [], nextCursor: null });
  });

  test.each([
    ["/v1/jobs", "/query/tenantId"],
    ["/v1/jobs?tenantId=acme&limit=0", "/query/limit"],
    ["/v1/jobs?tenantId=acme&limit=101", "/query/limit"],
    ["/v1/jobs?tenantId=a%20b", "/query/tenantId"],
  ])("%s is a 400 problem naming %s", async (path, field) => {
    const { request } = await startTestRuntime();
    const response = await request(path);
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { errors: { path: string }[] };
    expect(problem.errors.map((e) => e.path)).toContain(field);
  });

  test("a cursor this service did not issue is a 400 problem", async () => {
    const { request } = await startTestRuntime();
    const response = await request("/v1/jobs?tenantId=acme&cursor=%25%25not-base64");
    expect(response.status).toBe(400);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
  });
});
