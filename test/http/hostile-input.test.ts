/**
 * Malformed and hostile requests against the real service over raw TCP, table-driven: each gets
 * a problem+json with the right status and type, and the service answers /healthz afterwards.
 * Raw sockets because Bun and Deno parse the request line and the Host header before the app runs;
 * the same table runs against the service on each.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { ingestCommand } from "../../dev/in-process-runtime.ts";
import { type ServiceProcess, startService } from "../support/service-process.ts";

const LIMIT = 65536;
const KEY = "hostile-admin-key-0123456789";
let service: ServiceProcess;

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends `head` (request line and headers, without the blank line) and `body` as they are; reads the whole answer. */
function raw(head: string, body = ""): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(service.url.port), "127.0.0.1", () => {
      const length = body === "" ? "" : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
      socket.write(`${head}\r\n${length}Connection: close\r\n\r\n${body}`);
    });
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const [head = "", ...rest] = text.split("\r\n\r\n");
      const [statusLine = "", ...headerLines] = head.split("\r\n");
      const headers = Object.fromEntries(headerLines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]));
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body: rest.join("\r\n\r\n") });
    });
  });
}

const request = (method: string, path: string, headers: Record<string, string> = {}, body = "") =>
  raw([`${method} ${path} HTTP/1.1`, ...Object.entries({ Host: "127.0.0.1", ...headers }).map(([k, v]) => `${k}: ${v}`)].join("\r\n"), body);

const json = { "Content-Type": "application/json" };
const admin = { ...json, "X-API-Key": KEY };
const nested = (depth: number, inner = "1") => `${"[".repeat(depth)}${inner}${"]".repeat(depth)}`;
const command = (payload: Record<string, unknown>) => JSON.stringify(ingestCommand({ payload: { ...ingestCommand().payload, ...payload } }));
const commandWithRaw = (member: string) => command({ x: 0 }).replace('"x":0', member);

async function submitted(): Promise<{ jobId: string; stepId: string }> {
  const accepted = await request("POST", "/v1/commands", json, JSON.stringify(ingestCommand()));
  const { jobId } = JSON.parse(accepted.body) as { jobId: string };
  const job = await request("GET", `/v1/jobs/${jobId}`);
  return { jobId, stepId: (JSON.parse(job.body) as { steps: { stepId: string }[] }).steps[0]!.stepId };
}

interface Case {
  name: string;
  send: () => Promise<RawResponse>;
  status: number;
  type: string;
  /** More to check on the answer. */
  check?: (response: RawResponse, problem: { errors?: { path: string; message: string }[]; detail: string }) => void | Promise<void>;
}

const cases: Case[] = [
  // Nesting, numbers, strings.
  {
    name: "a body nested 20,000 deep is refused at the depth limit",
    send: () => request("POST", "/v1/commands", json, nested(20000)),
    status: 422,
    type: "validation-failed",
    check: (_, p) => expect(p.errors?.[0]?.message).toContain("deeper than 64"),
  },
  {
    name: "a valid command with a payload nested 30,000 deep",
    send: () => request("POST", "/v1/commands", json, command({ d: 0 }).replace('"d":0', `"d":${nested(30000)}`)),
    status: 422,
    type: "validation-failed",
  },
  {
    name: "a payload with a lone surrogate under an Idempotency-Key",
    send: () => request("POST", "/v1/commands", { ...json, "Idempotency-Key": "h-1" }, commandWithRaw('"x":"\\ud800"')),
    status: 422,
    type: "validation-failed",
    check: (_, p) => expect(p.errors).toEqual([{ path: "/payload/x", message: expect.stringContaining("lone surrogate") }]),
  },
  {
    name: "a payload with a number beyond double range under an Idempotency-Key",
    send: () => request("POST", "/v1/commands", { ...json, "Idempotency-Key": "h-2" }, commandWithRaw('"x":1e400')),
    status: 422,
    type: "validation-failed",
    check: (_, p) => expect(p.errors?.[0]?.path).toBe("/payload/x"),
  },
  // Host and request target.
  ...["a b", "", "127.0.0.1:99999", "user@evil:1"].map<Case>((host) => ({
    name: `Host: ${JSON.stringify(host)}`,
    send: () => raw(`GET /healthz HTTP/1.1\r\nHost: ${host}`),
    status: 400,
    type: "malformed-request",
  })),
  { name: "CONNECT to an authority", send: () => raw("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1"), status: 400, type: "malformed-request" },
  {
    name: "HTTP/1.0 without a Host is served",
    send: () => raw("GET /v1/jobs/nope HTTP/1.0"),
    status: 404,
    type: "not-found",
    check: (_, p) => expect(p.detail).toBe("job nope does not exist"),
  },
  {
    name: "HTTP/1.0 without a Host, and a one-character Host, still carry a command's body",
    send: async () => {
      const accepted = await raw("POST /v1/commands HTTP/1.0\r\nContent-Type: application/json", JSON.stringify(ingestCommand()));
      expect(accepted.status).toBe(202);
      // The body reaches the reader through the rebuilt request: not JSON, refused as usual.
      return raw("POST /v1/commands HTTP/1.1\r\nHost: a\r\nContent-Type: application/json", "{nope");
    },
    status: 400,
    type: "malformed-json",
  },
  {
    name: "a Host with an empty port (RFC 3986 allows it) is routed like any other",
    send: () => raw("GET /v1/jobs/nope HTTP/1.1\r\nHost: localhost:"),
    status: 404,
    type: "not-found",
  },
  {
    name: "a one-character Host is routed like any other",
    send: () => raw("GET /v1/jobs/nope HTTP/1.1\r\nHost: a"),
    status: 404,
    type: "not-found",
    check: (_, p) => expect(p.detail).toBe("job nope does not exist"),
  },
  // Methods and media types.
  // (A method Bun's parser does not know, such as FOO, never reaches the app: Bun closes the connection.)
  ...["PROPFIND", "PURGE", "PATCH"].map<Case>((method) => ({
    name: `${method} on a job`,
    send: () => request(method, "/v1/jobs/abc"),
    status: 405,
    type: "method-not-allowed",
    check: (r) => expect(r.headers.allow).toBe("GET, HEAD"),
  })),

  {
    name: "DELETE on a job",
    send: () => request("DELETE", "/v1/jobs/abc"),
    status: 405,
    type: "method-not-allowed",
    check: (r) => expect(r.headers.allow).toBe("GET, HEAD"),
  },
  {
    name: "GET on the command intake",
    send: () => request("GET", "/v1/commands"),
    status: 405,
    type: "method-not-allowed",
    check: (r) => expect(r.headers.allow).toBe("POST"),
  },
  {
    name: "a command sent as text/plain",
    send: () => request("POST", "/v1/commands", { "Content-Type": "text/plain" }, JSON.stringify(ingestCommand())),
    status: 415,
    type: "unsupported-media-type",
  },
  {
    name: "a command far over the limit, declared",
    send: () => request("POST", "/v1/commands", json, "x".repeat(LIMIT * 5)),
    status: 413,
    type: "payload-too-large",
  },
  // Limits on every route.
  {
    name: "a step event over the body limit",
    send: async () => {
      const { jobId, stepId } = await submitted();
      return request("POST", `/v1/jobs/${jobId}/steps/${stepId}/events`, json, JSON.stringify({ eventId: "e", status: "progress", pad: "x".repeat(LIMIT) }));
    },
    status: 413,
    type: "payload-too-large",
  },
  {
    name: "an admin retry body over the limit",
    send: () => request("POST", "/v1/admin/outbox/retry", admin, JSON.stringify({ pad: "x".repeat(LIMIT) })),
    status: 413,
    type: "payload-too-large",
  },
  {
    name: "a cancel with a body declared over the limit",
    send: () => request("POST", "/v1/jobs/abc/cancel", json, "x".repeat(LIMIT + 1)),
    status: 413,
    type: "payload-too-large",
  },
  {
    name: "a step result nested 30,000 deep leaves its job readable",
    send: async () => {
      const { jobId, stepId } = await submitted();
      const refused = await request(
        "POST",
        `/v1/jobs/${jobId}/steps/${stepId}/events`,
        json,
        `{"eventId":"e1","status":"succeeded","result":{"r":${nested(30000)}}}`,
      );
      expect((await request("GET", `/v1/jobs/${jobId}`)).status).toBe(200);
      return refused;
    },
    status: 422,
    type: "validation-failed",
  },
  // The admin key comes first.
  {
    name: "admin without a key and with a malformed body",
    send: () => request("POST", "/v1/admin/outbox/retry", json, '{"limit":"lots"'),
    status: 401,
    type: "unauthorized",
  },
  { name: "admin without a key and with a bad query", send: () => request("GET", "/v1/admin/outbox?status=bogus&limit=x"), status: 401, type: "unauthorized" },
  // Messages that say what is allowed.
  {
    name: "an unknown event status lists the statuses",
    send: async () => {
      const { jobId, stepId } = await submitted();
      return request("POST", `/v1/jobs/${jobId}/steps/${stepId}/events`, json, '{"eventId":"e","status":"finished"}');
    },
    status: 422,
    type: "validation-failed",
    check: (_, p) => expect(p.errors).toEqual([{ path: "/status", message: "must be one of: succeeded, failed, progress" }]),
  },
  {
    name: "an unknown admin status lists the statuses",
    send: () => request("GET", "/v1/admin/outbox?status=bogus", admin),
    status: 400,
    type: "malformed-request",
    check: (_, p) => expect(p.errors).toEqual([{ path: "/query/status", message: "must be one of: pending, failed, sent, withdrawn" }]),
  },
  {
    name: "a listing without tenantId",
    send: () => request("GET", "/v1/jobs"),
    status: 400,
    type: "malformed-request",
    check: (_, p) => expect(p.errors?.[0]?.path).toBe("/query/tenantId"),
  },
  {
    name: "a listing with a bad limit",
    send: () => request("GET", "/v1/jobs?tenantId=acme&limit=0"),
    status: 400,
    type: "malformed-request",
    check: (_, p) => expect(p.errors?.[0]?.path).toBe("/query/limit"),
  },
  { name: "an empty body", send: () => request("POST", "/v1/commands", json, " "), status: 400, type: "malformed-json" },
  { name: "a body that is not JSON", send: () => request("POST", "/v1/commands", json, "{nope"), status: 400, type: "malformed-json" },
];

for (const runtime of ["bun", "deno"] as const)
  describe(`hostile input over a real socket, on ${runtime}`, () => {
    beforeAll(async () => {
      service = await startService({ LUCIUS_MAX_BODY_BYTES: String(LIMIT), LUCIUS_ADMIN_ENABLED: "true", LUCIUS_ADMIN_API_KEY: KEY }, 20_000, runtime);
    });
    afterAll(async () => {
      service.proc.kill("SIGTERM");
      await service.proc.exited;
    });

    for (const c of cases) {
      test(`${c.name}: ${c.status} ${c.type}, and the service still answers`, async () => {
        const response = await c.send();
        expect(response.status).toBe(c.status);
        expect(response.headers["content-type"]).toBe("application/problem+json");
        const problem = JSON.parse(response.body);
        expect(problem.type).toBe(`urn:lucius:problem:${c.type}`);
        expect(response.body).not.toContain("node_modules");
        await c.check?.(response, problem);
        expect((await request("GET", "/healthz")).status).toBe(200);
      });
    }

    test("a key refused for its malformed payload is free for the corrected request", async () => {
      const headers = { ...json, "Idempotency-Key": "deep-then-fixed" };
      expect((await request("POST", "/v1/commands", headers, command({ d: 0 }).replace('"d":0', `"d":${nested(30000)}`))).status).toBe(422);
      expect((await request("POST", "/v1/commands", headers, JSON.stringify(ingestCommand()))).status).toBe(202);
    });
  });
