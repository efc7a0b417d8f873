/**
 * The built worker library (ESM in dist/, declarations beside it) on Node and on Deno: each takes
 * a step message from the dev broker and sends its `succeeded` event to the message's `replyTo`.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { denoExecutable } from "../../dev/deno-command.ts";
import { startBroker } from "../../dev/service-bus.ts";

const root = resolve(import.meta.dir, "../..");
const packageDir = resolve(root, "packages/worker");

beforeAll(async () => {
  const build = Bun.spawnSync(["bun", "run", "build"], { cwd: packageDir, stdout: "pipe", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`);
}, 30_000);

describe("@lucius/worker built", () => {
  test("dist has the ESM entry and its declarations", () => {
    expect(existsSync(resolve(packageDir, "dist/index.js"))).toBe(true);
    expect(existsSync(resolve(packageDir, "dist/index.d.ts"))).toBe(true);
  });

  for (const runtime of ["node", "deno"] as const) {
    test(`on ${runtime}: a step message is answered with its succeeded event`, async () => {
      const bus = await startBroker({ topics: { work: ["workers"] }, queues: ["events"] });
      const script = resolve(import.meta.dir, "fixtures/node-worker.mjs");
      const command = runtime === "node" ? ["node", script] : [denoExecutable(), "run", "-A", script];
      const proc = Bun.spawn([...command, bus.broker.connectionString, "work"], { cwd: root, stdout: "pipe", stderr: "pipe" });
      try {
        const sender = bus.client.createSender("work");
        await sender.sendMessages({
          messageId: "job-1.s0.d0",
          body: {
            jobId: "job-1",
            stepId: "job-1.s0",
            stepName: "work",
            stepIndex: 0,
            attempt: 1,
            requestType: "r",
            tenantId: "t",
            correlationId: null,
            payload: { n: 7 },
            results: {},
          },
          contentType: "application/json",
          replyTo: "events",
        });
        await sender.close();
        const receiver = bus.client.createReceiver("events", { receiveMode: "receiveAndDelete" });
        const [event] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 15_000 });
        await receiver.close();
        expect(event?.body).toEqual({
          jobId: "job-1",
          stepId: "job-1.s0",
          attempt: 1,
          eventId: "job-1.s0.d0:succeeded",
          status: "succeeded",
          result: { runtime, item: 7 },
        });
      } finally {
        proc.kill("SIGTERM");
        await proc.exited;
        await bus.stop();
      }
    }, 30_000);
  }
});
