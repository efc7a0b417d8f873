/**
 * @lucius/client against the real service: in process (on `ledger` over Azurite, or memory) and
 * as a process of its own for the event stream. Submit survives a 503 from storage by retrying
 * with the same key and yields one job; wait returns on the job's end through the stream and
 * through polling; a problem arrives as the typed error with its errors; auth, listing, history
 * and repairs go through the routes docs/API.md names.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../../dev/eventually.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";
import { type Command, createClient, type FetchLike, type Job, LuciusProblem, LuciusTimeoutError, LuciusTokenError } from "../../packages/client/src/index.ts";
import { newApiKey } from "../../src/auth/api-key-authenticator.ts";
import { StorageUnavailableError } from "../../src/domain/errors.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { type ServiceProcess, startService } from "../support/service-process.ts";
import { storeFor } from "../support/stores.ts";

function ocrCommand(tenantId = "acme", documentUri = "https://files.example/d1.pdf"): Command {
  return { requestType: "document.ocr", tenantId, payload: { documentId: "d1", documentUri, contentType: "application/pdf" } };
}

interface Sent {
  method: string;
  path: string;
  headers: Headers;
  status?: number;
  at: number;
}

/** A fetch that records what the client sends and what it gets, in order. */
function recording(inner: (request: Request) => Promise<Response>) {
  const sent: Sent[] = [];
  const fetch: FetchLike = async (input, init) => {
    const request = new Request(input, init);
    const entry: Sent = { method: request.method, path: new URL(request.url).pathname, headers: request.headers, at: Date.now() };
    sent.push(entry);
    const response = await inner(request);
    entry.status = response.status;
    return response;
  };
  return { sent, fetch };
}

/**
 * The stream's body as the client reads it, but never closed by the service's side: a wait that
 * returns must have read the `end` event rather than relied on the stream closing after it.
 */
function heldOpen(response: Response): Response {
  const reader = response.body!.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) return new Promise<void>(() => {});
      controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

async function firstStepId(baseUrl: string, jobId: string): Promise<string> {
  const job = (await (await fetch(new URL(`/v1/jobs/${jobId}`, baseUrl))).json()) as Job;
  return job.steps[0]!.stepId;
}

async function reportSucceeded(baseUrl: string, jobId: string, stepId: string) {
  const response = await fetch(new URL(`/v1/jobs/${jobId}/steps/${stepId}/events`, baseUrl), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ eventId: `e-${stepId}`, status: "succeeded", result: {} }),
  });
  expect(response.status).toBe(202);
}

describe("submit", () => {
  test("survives a 503 from storage (the write done, its answer lost) by retrying with the same key after Retry-After, and yields one job", async () => {
    const ledger = await storeFor("ledger");
    let creates = 0;
    const flaky: JobStore = {
      ...ledger,
      async createJob(...args) {
        const result = await ledger.createJob(...args);
        if (creates++ === 0) throw new StorageUnavailableError("the table service's answer was lost", { retryAfterSeconds: 1 });
        return result;
      },
    };
    const { runtime } = await startTestRuntime({ store: flaky });
    const { sent, fetch } = recording((request) => runtime.fetch(request));
    const client = createClient({ baseUrl: "http://localhost", fetch });

    const submitted = await client.submit(ocrCommand(), { deadlineMs: 5_000 });

    const posts = sent.filter((s) => s.method === "POST" && s.path === "/v1/commands");
    expect(posts.map((p) => p.status)).toEqual([503, 202]);
    expect(posts.map((p) => p.headers.get("idempotency-key"))).toEqual([submitted.idempotencyKey, submitted.idempotencyKey]);
    expect(submitted.idempotencyKey).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(posts[1]!.at - posts[0]!.at).toBeGreaterThanOrEqual(950); // Retry-After: 1 honoured
    expect(submitted).toMatchObject({ status: "accepted", requestType: "document.ocr", tenantId: "acme", replayed: true });
    const jobs = [];
    for await (const job of client.list({ tenantId: "acme" })) jobs.push(job);
    expect(jobs.map((j) => j.jobId)).toEqual([submitted.jobId]);
    expect((await client.get(submitted.jobId)).steps).toHaveLength(1);
  });

  test("gives up with a TimeoutError carrying the key and the last problem when Retry-After would pass the deadline", async () => {
    const memory = await storeFor("memory");
    const down: JobStore = {
      ...memory,
      async createJob() {
        throw new StorageUnavailableError("down", { retryAfterSeconds: 2 });
      },
    };
    const { runtime } = await startTestRuntime({ store: down });
    const { sent, fetch } = recording((request) => runtime.fetch(request));
    const client = createClient({ baseUrl: "http://localhost", fetch, submitDeadlineMs: 1_000 });
    const started = Date.now();
    const error = await client.submit(ocrCommand(), { idempotencyKey: "k-deadline" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LuciusTimeoutError);
    expect(error).toMatchObject({ name: "TimeoutError", idempotencyKey: "k-deadline" });
    expect((error as Error).cause).toBeInstanceOf(LuciusProblem);
    expect((error as Error).cause).toMatchObject({ status: 503, code: "storage-unavailable", retryAfterSeconds: 2 });
    expect(sent).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  test("a gateway's 502 after the service stored the command is retried with the same key: one job, replayed", async () => {
    const { runtime } = await startTestRuntime();
    let calls = 0;
    const { sent, fetch } = recording(async (request) => {
      const answer = await runtime.fetch(request);
      // The first answer is lost at a gateway, after the service stored the command.
      return calls++ === 0 ? new Response("bad gateway", { status: 502 }) : answer;
    });
    const client = createClient({ baseUrl: "http://localhost", fetch });
    const submitted = await client.submit(ocrCommand(), { idempotencyKey: "k-502" });
    expect(submitted).toMatchObject({ idempotencyKey: "k-502", replayed: true });
    expect(sent.map((s) => s.headers.get("idempotency-key"))).toEqual(["k-502", "k-502"]);
  });

  test("a token function that fails rejects wait with LuciusTokenError instead of polling on", async () => {
    const { runtime } = await startTestRuntime();
    let asked = 0;
    const client = createClient({
      baseUrl: "http://localhost",
      fetch: (input, init) => runtime.fetch(new Request(input, init)),
      token: () => {
        asked++;
        throw new Error("the identity provider is down");
      },
    });
    const error = await client.wait("01a23e00-0000-7000-8000-000000000000", { pollIntervalMs: 10, timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LuciusTokenError);
    expect(asked).toBeLessThanOrEqual(2);
  });

  test("a network error is retried with the same key", async () => {
    const { runtime } = await startTestRuntime();
    let calls = 0;
    const { sent, fetch } = recording((request) => {
      if (calls++ === 0) return Promise.reject(new TypeError("fetch failed"));
      return runtime.fetch(request);
    });
    const client = createClient({ baseUrl: "http://localhost", fetch });
    const submitted = await client.submit(ocrCommand(), { idempotencyKey: "k-net" });
    expect(submitted).toMatchObject({ idempotencyKey: "k-net", replayed: false });
    expect(sent.map((s) => s.headers.get("idempotency-key"))).toEqual(["k-net", "k-net"]);
  });
});

describe("problems", () => {
  test("a bad payload arrives as a LuciusProblem with its type, title, status and errors, not retried", async () => {
    const { runtime } = await startTestRuntime();
    const { sent, fetch } = recording((request) => runtime.fetch(request));
    const client = createClient({ baseUrl: "http://localhost", fetch });
    const error = await client.submit(ocrCommand("acme", "not a uri")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LuciusProblem);
    const problem = error as LuciusProblem;
    expect(problem.status).toBe(422);
    expect(problem.type).toBe("urn:lucius:problem:validation-failed");
    expect(problem.code).toBe("validation-failed");
    expect(problem.title).toBe("Request does not match its schema");
    expect(problem.errors).toContainEqual({ path: "/payload/documentUri", message: expect.stringContaining("uri") });
    expect(problem.instance).toBe("/v1/commands");
    expect(sent).toHaveLength(1);
  });

  test("an unknown job is a 404 problem; a non-problem error answer is one with type about:blank", async () => {
    const { runtime } = await startTestRuntime();
    const client = createClient({ baseUrl: "http://localhost", fetch: (input, init) => runtime.fetch(new Request(input, init)) });
    const missing = await client.get("0193aaaa-0000-7000-8000-000000000000").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(LuciusProblem);
    expect(missing).toMatchObject({ status: 404, code: "not-found", title: "Not found" });

    const proxy = createClient({
      baseUrl: "http://localhost",
      fetch: async () => new Response("<h1>Bad Gateway</h1>", { status: 502, statusText: "Bad Gateway" }),
    });
    const gateway = await proxy.get("j1").catch((e: unknown) => e);
    expect(gateway).toBeInstanceOf(LuciusProblem);
    expect(gateway).toMatchObject({ status: 502, type: "about:blank", title: "Bad Gateway", errors: [] });
  });
});

describe("wait, against a service process", () => {
  let service: ServiceProcess;
  let baseUrl: string;
  beforeAll(async () => {
    service = await startService();
    baseUrl = service.url.toString();
  }, 15_000);
  afterAll(async () => {
    service?.proc.kill("SIGTERM");
    await service?.proc.exited;
  }, 15_000);

  test("returns on the job's end through the stream: its end event, no read of the job but the final one", async () => {
    const log: string[] = [];
    const { sent, fetch } = recording(async (request) => {
      const response = await globalThis.fetch(request);
      return request.url.endsWith("/stream") ? heldOpen(response) : response;
    });
    const client = createClient({ baseUrl, fetch });
    const { jobId } = await client.submit(ocrCommand());
    const stepId = await firstStepId(baseUrl, jobId);
    sent.length = 0;

    const waiting = client.wait(jobId, { timeoutMs: 3_000, pollIntervalMs: 20 });
    waiting.catch(() => {}); // awaited below; a failure before that is not left unhandled
    await eventually(() => sent.some((s) => s.path.endsWith("/stream") && s.status === 200), { what: "the stream open", timeoutMs: 3_000 });
    log.push(...sent.map((s) => `${s.method} ${s.path.replace(jobId, ":id")}`));
    log.push("event reported");
    await reportSucceeded(baseUrl, jobId, stepId);
    const job = await waiting;

    expect(job.status).toBe("succeeded");
    expect(job.steps[0]?.status).toBe("succeeded");
    log.push(...sent.slice(1).map((s) => `${s.method} ${s.path.replace(jobId, ":id")}`));
    expect(log).toEqual(["GET /v1/jobs/:id/stream", "event reported", "GET /v1/jobs/:id"]);
    expect(sent[0]!.headers.get("accept")).toBe("text/event-stream");
  });

  test("returns on the job's end through polling when told not to stream", async () => {
    const { sent, fetch } = recording((request) => globalThis.fetch(request));
    const client = createClient({ baseUrl, fetch });
    const { jobId } = await client.submit(ocrCommand());
    const stepId = await firstStepId(baseUrl, jobId);
    sent.length = 0;

    const waiting = client.wait(jobId, { stream: false, timeoutMs: 3_000, pollIntervalMs: 20 });
    waiting.catch(() => {});
    await eventually(() => sent.filter((s) => s.path === `/v1/jobs/${jobId}`).length >= 2, { what: "two polls", timeoutMs: 3_000 });
    await reportSucceeded(baseUrl, jobId, stepId);
    const job = await waiting;

    expect(job.status).toBe("succeeded");
    expect(sent.every((s) => s.method === "GET" && s.path === `/v1/jobs/${jobId}`)).toBe(true);
    expect(sent.length).toBeGreaterThanOrEqual(3);
  });

  test("falls back to polling when the stream answers 503, or drops before the end", async () => {
    for (const stream of [
      () => new Response('{"type":"urn:lucius:problem:too-many-streams"}', { status: 503, headers: { "content-type": "application/problem+json" } }),
      () => new Response("retry: 3000\n\nevent: snapshot\nid: 1\ndata: {}\n\n", { headers: { "content-type": "text/event-stream" } }),
    ]) {
      const { sent, fetch } = recording((request) => (request.url.endsWith("/stream") ? Promise.resolve(stream()) : globalThis.fetch(request)));
      const client = createClient({ baseUrl, fetch });
      const { jobId } = await client.submit(ocrCommand());
      const stepId = await firstStepId(baseUrl, jobId);
      sent.length = 0;

      const waiting = client.wait(jobId, { timeoutMs: 3_000, pollIntervalMs: 20 });
      waiting.catch(() => {});
      await eventually(() => sent.filter((s) => s.path === `/v1/jobs/${jobId}`).length >= 2, { what: "polls after the stream failed", timeoutMs: 3_000 });
      await reportSucceeded(baseUrl, jobId, stepId);
      expect((await waiting).status).toBe("succeeded");
      expect(sent[0]!.path).toBe(`/v1/jobs/${jobId}/stream`);
    }
  });

  test("a job that does not end: the wait times out with a TimeoutError, or ends with the abort's reason", async () => {
    const client = createClient({ baseUrl });
    const { jobId } = await client.submit(ocrCommand());

    const started = Date.now();
    const timedOut = await client.wait(jobId, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(timedOut).toBeInstanceOf(Error);
    expect(timedOut).toMatchObject({ name: "TimeoutError", jobId });
    expect(Date.now() - started).toBeLessThan(2_000);

    const polled = await client.wait(jobId, { timeoutMs: 200, stream: false, pollIntervalMs: 50 }).catch((e: unknown) => e);
    expect(polled).toMatchObject({ name: "TimeoutError", lastSeen: { jobId, status: "accepted" } });

    const controller = new AbortController();
    const reason = new Error("the user navigated away");
    controller.abort(reason);
    expect(await client.wait(jobId, { signal: controller.signal }).catch((e: unknown) => e)).toBe(reason);
    const late = new AbortController();
    const pending = client.wait(jobId, { signal: late.signal }).catch((e: unknown) => e);
    late.abort(reason);
    expect(await pending).toBe(reason);
  });
});

describe("auth, listing, history and repairs", () => {
  const dir = mkdtempSync(join(tmpdir(), "lucius-client-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const submitter = newApiKey({ name: "client-app", tenants: ["acme"], roles: ["commands.submit", "jobs.read"] });
  const operator = newApiKey({ name: "operator-ann", tenants: ["acme"], roles: ["jobs.operate", "jobs.read"] });
  const keysFile = join(dir, "keys.json");
  writeFileSync(keysFile, JSON.stringify([submitter.entry, operator.entry]));

  test("an API key goes in X-API-Key, a token (or a function giving one) as a bearer; none is a 401 problem", async () => {
    const { runtime } = await startTestRuntime({ env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: keysFile } });
    const { sent, fetch } = recording((request) => runtime.fetch(request));
    const byKey = createClient({ baseUrl: "http://localhost", fetch, apiKey: submitter.key });
    const { jobId } = await byKey.submit(ocrCommand());
    expect(sent[0]!.headers.get("x-api-key")).toBe(submitter.key);
    expect(sent[0]!.headers.get("authorization")).toBeNull();

    let asked = 0;
    const byToken = createClient({
      baseUrl: "http://localhost",
      fetch,
      token: async () => {
        asked++;
        return operator.key;
      },
    });
    expect((await byToken.get(jobId)).jobId).toBe(jobId);
    expect((await byToken.pause(jobId)).paused).toBe(true);
    expect(asked).toBe(2);
    expect(sent.at(-1)!.headers.get("authorization")).toBe(`Bearer ${operator.key}`);

    const anonymous = createClient({ baseUrl: "http://localhost", fetch });
    expect(await anonymous.get(jobId).catch((e: unknown) => e)).toMatchObject({ status: 401, code: "unauthorized" });
    expect(await byKey.cancel(jobId).catch((e: unknown) => e)).toMatchObject({ status: 403, code: "forbidden" });
    expect(() => createClient({ baseUrl: "http://localhost", token: "t", apiKey: "k" })).toThrow(TypeError);
  });

  test("list follows the cursor page by page; history, pause, resume, cancel and redrive answer as documented", async () => {
    const { runtime } = await startTestRuntime();
    const { sent, fetch } = recording((request) => runtime.fetch(request));
    const client = createClient({ baseUrl: "http://localhost/", fetch });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await client.submit(ocrCommand("globex"))).jobId);
    sent.length = 0;

    const pages = [];
    for await (const page of client.list({ tenantId: "globex", limit: 2 }).pages()) pages.push(page.items.map((j) => j.jobId));
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...ids].reverse());
    expect(new URL(`http://x${sent[0]!.path}`).pathname).toBe("/v1/jobs");
    const paused = [];
    for await (const job of client.list({ tenantId: "globex", status: "accepted", paused: false, requestType: "document.ocr", limit: 100 })) paused.push(job);
    expect(paused).toHaveLength(5);

    const [jobId] = ids as [string];
    expect(await client.pause(jobId)).toEqual({ jobId, status: "accepted", paused: true, redrives: 0 });
    expect(await client.resume(jobId)).toEqual({ jobId, status: "accepted", paused: false, redrives: 0 });
    expect(await client.cancel(jobId)).toEqual({ jobId, status: "cancelled" });
    expect(await client.cancel(jobId).catch((e: unknown) => e)).toMatchObject({ status: 409, code: "invalid-transition" });
    const redriven = await client.redrive(jobId, { patch: { language: "de" } });
    expect(redriven).toMatchObject({ jobId, status: "in_progress", redrives: 1 });
    await client.cancel(ids[1]!);
    const bad = await client.redrive(ids[1]!, { patch: { documentUri: "not a uri" } }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(LuciusProblem);
    expect(bad).toMatchObject({ status: 422, code: "validation-failed" });
    expect((bad as LuciusProblem).errors.map((e) => e.path)).toContain("/payload/documentUri");

    const history = await client.history(jobId);
    expect(history.map((h) => h.action)).toEqual(["accepted", "pause", "resume", "cancel", "redrive"]);
    expect(history.map((h) => h.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(history[4]).toMatchObject({ jobStatus: "in_progress", detail: expect.objectContaining({ redrive: 1 }) });
  });
});
