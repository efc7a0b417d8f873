// Bun enforces its own body limit before Elysia runs, so the limit is tested on the real service over a socket.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ingestCommand } from "../../dev/in-process-runtime.ts";
import { type ServiceProcess, startService } from "../support/service-process.ts";

const LIMIT = 4096;
let service: ServiceProcess;

beforeAll(async () => {
  service = await startService({ LUCIUS_MAX_BODY_BYTES: String(LIMIT) });
});
afterAll(async () => {
  service.proc.kill("SIGTERM");
  await service.proc.exited;
});

/** A valid command padded to exactly `bytes` bytes. */
function commandOfSize(bytes: number): string {
  const padded = ingestCommand({ payload: { ...ingestCommand().payload, padding: "" } });
  const overhead = JSON.stringify(padded).length;
  return JSON.stringify({ ...padded, payload: { ...padded.payload, padding: "x".repeat(bytes - overhead) } });
}

const post = (body: BodyInit) => fetch(new URL("/v1/commands", service.url), { method: "POST", headers: { "content-type": "application/json" }, body });

describe("LUCIUS_MAX_BODY_BYTES over a real socket", () => {
  test("a body of exactly the limit is accepted", async () => {
    const body = commandOfSize(LIMIT);
    expect(body.length).toBe(LIMIT);
    expect((await post(body)).status).toBe(202);
  });

  test("one byte over the limit is a 413 problem", async () => {
    const response = await post(commandOfSize(LIMIT + 1));
    expect(response.status).toBe(413);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
    expect(((await response.json()) as { type: string }).type).toEndWith("payload-too-large");
  });

  test("a chunked body without Content-Length is cut off at the limit with a 413 problem", async () => {
    const chunk = new TextEncoder().encode("x".repeat(1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 6) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const response = await post(stream);
    expect(response.status).toBe(413);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
  });

  test("far beyond the limit the body is refused with a problem too, not by Bun's empty 413", async () => {
    const response = await post("x".repeat(LIMIT * 4));
    expect(response.status).toBe(413);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
  });
});
