import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { azurite, freshTables } from "../dev/azurite.ts";
import { eventually } from "../dev/eventually.ts";
import { ingestCommand } from "../dev/in-process-runtime.ts";
import { startBroker } from "../dev/service-bus.ts";
import { runServiceExpectingExit, startService } from "./support/service-process.ts";

const dir = mkdtempSync(join(tmpdir(), "lucius-main-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("start", () => {
  test("says once that nothing is published without LUCIUS_SERVICEBUS_CONNECTION, and serves", async () => {
    const service = await startService();
    try {
      expect(service.logs.find((l) => l.msg === "lucius listening")).toMatchObject({
        storage: "memory",
        protocols: ["document.ocr", "document.ingest", "document.pages"],
      });
      await eventually(() => service.logs.some((l) => String(l.msg).includes("LUCIUS_SERVICEBUS_CONNECTION")), { what: "the publishing notice" });
      expect((await fetch(new URL("/healthz", service.url))).status).toBe(200);
      const notices = service.logs.filter((l) => String(l.msg).includes("LUCIUS_SERVICEBUS_CONNECTION"));
      expect(notices).toHaveLength(1);
      expect((await fetch(new URL("/healthz", service.url))).status).toBe(200);
    } finally {
      service.proc.kill("SIGTERM");
      await service.proc.exited;
    }
  });

  test("bad configuration exits 1 naming every wrong variable", async () => {
    const { code, stderr } = await runServiceExpectingExit({
      LUCIUS_PORT: "99999",
      LUCIUS_STORAGE_BACKEND: "table",
      LUCIUS_LOG_LEVEL: "chatty",
      LUCIUS_ADMIN_ENABLED: "true",
    });
    expect(code).toBe(1);
    for (const name of ["LUCIUS_PORT", "LUCIUS_TABLE_CONNECTION", "LUCIUS_LOG_LEVEL", "LUCIUS_ADMIN_API_KEY"]) expect(stderr).toContain(name);
  });

  test("a broken protocol file exits 1 naming the file and the problem", async () => {
    const path = join(dir, "protocols.json");
    writeFileSync(path, JSON.stringify({ protocols: [{ requestType: "a.b", version: 1, steps: [{ name: "x", topic: "t", payloadSchema: "nope.json" }] }] }));
    const { code, stderr } = await runServiceExpectingExit({ LUCIUS_PROTOCOLS_FILE: path });
    expect(code).toBe(1);
    expect(stderr).toContain(path);
    expect(stderr).toContain("nope.json");
  });

  test("LUCIUS_PROTOCOLS_FILE replaces the bundled protocols", async () => {
    const path = join(dir, "custom.json");
    writeFileSync(
      path,
      JSON.stringify({
        protocols: [
          {
            requestType: "invoice.parse",
            version: 1,
            steps: [{ name: "parse", topic: "invoices", payloadSchema: { type: "object", required: ["invoiceId"] } }],
          },
        ],
      }),
    );
    const service = await startService({ LUCIUS_PROTOCOLS_FILE: path });
    try {
      const post = (body: unknown) => fetch(new URL("/v1/commands", service.url), { method: "POST", body: JSON.stringify(body) });
      expect((await post({ requestType: "invoice.parse", tenantId: "acme", payload: { invoiceId: "i1" } })).status).toBe(202);
      expect((await post(ingestCommand())).status).toBe(422);
    } finally {
      service.proc.kill("SIGTERM");
      await service.proc.exited;
    }
  });
});

describe("stop", () => {
  test.each(["SIGTERM", "SIGINT"] as const)("%s stops the service gracefully with exit code 0", async (signal) => {
    const service = await startService();
    const response = await fetch(new URL("/v1/commands", service.url), { method: "POST", body: JSON.stringify(ingestCommand()) });
    expect(response.status).toBe(202);
    service.proc.kill(signal);
    expect(await service.proc.exited).toBe(0);
    await eventually(() => service.logs.some((l) => l.msg === "stopped"), { what: "the stopped log line" });
  });
});

describe("stop, with the process group signalled", () => {
  test("SIGTERM to the group of `bun run start` (delivered twice: directly and forwarded) still drains and exits 0", async () => {
    const bus = await startBroker({ queues: ["step-events"] });
    const proc = Bun.spawn(["bun", "run", "start"], {
      cwd: join(import.meta.dir, ".."),
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        LUCIUS_HOST: "127.0.0.1",
        LUCIUS_PORT: "0",
        LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
        // The receiver's close is what keeps the drain busy when the forwarded copy arrives.
        LUCIUS_EVENTS_ENTITY: "step-events",
      },
      stdout: "pipe",
      stderr: "pipe",
      detached: true, // its own process group, as a supervisor starts it
    });
    try {
      const output = new Response(proc.stdout).text();
      // The receiver is running once it has taken a message off the queue (this one it dead-letters).
      const sender = bus.client.createSender("step-events");
      await sender.sendMessages({ body: { not: "an event" } });
      await sender.close();
      await eventually(() => bus.broker.depth("step-events") === 0, { timeoutMs: 15_000, what: "the receiver taking events" });
      process.kill(-proc.pid, "SIGTERM");
      expect(await proc.exited).toBe(0);
      const lines = (await output).split("\n").filter(Boolean);
      expect(lines.some((line) => line.includes('"stopped"'))).toBe(true);
      expect(lines.some((line) => line.includes("second signal"))).toBe(false);
    } finally {
      if (proc.exitCode === null) process.kill(-proc.pid, "SIGKILL");
      await bus.stop();
    }
  });
});

describe("Azure backends", () => {
  test.each(["table", "ledger"] as const)("LUCIUS_STORAGE_BACKEND=%s: a job accepted before a restart is there after it", async (backend) => {
    const { connection } = await azurite();
    const tables = freshTables();
    const env = {
      LUCIUS_STORAGE_BACKEND: backend,
      LUCIUS_TABLE_CONNECTION: connection,
      LUCIUS_JOBS_TABLE: tables.jobs,
      LUCIUS_STEPS_TABLE: tables.steps,
      LUCIUS_OUTBOX_TABLE: tables.outbox,
      LUCIUS_LEDGER_TABLE: tables.ledger,
      LUCIUS_IDEMPOTENCY_TABLE: tables.idempotency,
      LUCIUS_JOB_INDEX_TABLE: tables.jobIndex,
    };
    const first = await startService(env);
    const accepted = await fetch(new URL("/v1/commands", first.url), {
      method: "POST",
      headers: { "idempotency-key": "restart" },
      body: JSON.stringify(ingestCommand()),
    });
    expect(accepted.status).toBe(202);
    const { jobId } = (await accepted.json()) as { jobId: string };
    first.proc.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);

    const second = await startService(env);
    try {
      expect(((await (await fetch(new URL(`/v1/jobs/${jobId}`, second.url))).json()) as { status: string }).status).toBe("accepted");
      const replay = await fetch(new URL("/v1/commands", second.url), {
        method: "POST",
        headers: { "idempotency-key": "restart" },
        body: JSON.stringify(ingestCommand()),
      });
      expect(replay.headers.get("idempotent-replayed")).toBe("true");
      expect(((await replay.json()) as { jobId: string }).jobId).toBe(jobId);
      expect((await fetch(new URL("/readyz", second.url))).status).toBe(200);
    } finally {
      second.proc.kill("SIGTERM");
      await second.proc.exited;
    }
  });

  test("storage that does not answer at start stops the service with exit code 1 and a message", async () => {
    const { code, stderr } = await runServiceExpectingExit({
      LUCIUS_STORAGE_BACKEND: "ledger",
      LUCIUS_TABLE_CONNECTION: (await azurite()).connection.replace(/:\d+\//, ":1/"),
    });
    expect(code).toBe(1);
    expect(stderr).toContain("table storage did not answer");
  });
});

describe("Service Bus", () => {
  test("with LUCIUS_SERVICEBUS_CONNECTION the service publishes, logs the endpoint but never the key, and stops cleanly", async () => {
    const bus = await startBroker();
    try {
      const connection = bus.broker.connectionString.replace("SharedAccessKey=dev", "SharedAccessKey=s3cr3t-k3y");
      const service = await startService({ LUCIUS_SERVICEBUS_CONNECTION: connection });
      const accepted = await fetch(new URL("/v1/commands", service.url), { method: "POST", body: JSON.stringify(ingestCommand()) });
      expect(accepted.status).toBe(202);
      const { jobId } = (await accepted.json()) as { jobId: string };
      const [message] = await bus.receive("ocr-requests", 1);
      expect((message!.body as { jobId: string }).jobId).toBe(jobId);
      expect((await fetch(new URL("/readyz", service.url))).status).toBe(200);
      service.proc.kill("SIGTERM");
      expect(await service.proc.exited).toBe(0);
      await eventually(() => service.logs.some((l) => l.msg === "stopped"));
      expect(service.logs.find((l) => l.msg === "publishing to Azure Service Bus")).toMatchObject({ endpoint: `sb://127.0.0.1:${bus.broker.port}` });
      expect(JSON.stringify(service.logs)).not.toContain("s3cr3t");
    } finally {
      await bus.stop();
    }
  });
});

test("a port already in use stops the start with exit code 1 and the reason", async () => {
  const taken = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  try {
    const { code, stderr } = await runServiceExpectingExit({ LUCIUS_PORT: String(taken.port) });
    expect(code).toBe(1);
    expect(stderr).toContain(`cannot listen on 127.0.0.1:${taken.port}`);
  } finally {
    taken.stop(true);
  }
});
