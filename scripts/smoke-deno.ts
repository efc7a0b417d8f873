/**
 * The same source served by Deno 2, black-box: intake with an idempotent replay on `memory`,
 * then the whole stack (`bun run dev --runtime deno`: Azurite, the dev broker, the example
 * worker) running a three-step job to `succeeded`, its spans exported over OTLP/HTTP to a
 * receiver here (OpenTelemetry on Deno); each time a clean stop on SIGTERM. Run by .ci/run;
 * exits 1 naming what failed.
 *
 *   bun scripts/smoke-deno.ts
 */
import { resolve } from "node:path";
import { DENO_RUN, denoExecutable } from "../dev/deno-command.ts";

const root = resolve(import.meta.dir, "..");
const DENO = denoExecutable();

function fail(reason: string): never {
  console.error(`deno smoke: FAILED: ${reason}`);
  process.exit(1);
}

async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 60_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    // Thrown, not exited: the caller prints what the stack said before it fails.
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs / 1000} s`);
    await Bun.sleep(100);
  }
}

const command = (documentId: string, requestType = "document.ocr") =>
  JSON.stringify({ requestType, tenantId: "smoke", payload: { documentId, documentUri: "https://files.example/d.pdf", contentType: "application/pdf" } });

async function memoryIntake(): Promise<void> {
  const port = await freePort();
  const proc = Bun.spawn([DENO, ...DENO_RUN], {
    cwd: root,
    env: { ...process.env, LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: String(port), LUCIUS_LOG_LEVEL: "warn" },
    stdout: "inherit",
    stderr: "inherit",
  });
  const url = `http://127.0.0.1:${port}`;
  await until(async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), "the service on Deno answering /healthz");
  const post = () =>
    fetch(`${url}/v1/commands`, { method: "POST", headers: { "content-type": "application/json", "idempotency-key": "deno-1" }, body: command("d1") });
  const first = await post();
  const again = await post();
  const [a, b] = (await Promise.all([first.json(), again.json()])) as { jobId: string }[];
  if (first.status !== 202 || again.status !== 202) fail(`intake answered ${first.status} then ${again.status}`);
  if (again.headers.get("idempotent-replayed") !== "true" || a!.jobId !== b!.jobId) fail("the replay did not answer the first job");
  proc.kill("SIGTERM");
  const code = await proc.exited;
  if (code !== 0) fail(`the service on Deno exited with ${code} on SIGTERM`);
  console.log("deno smoke: memory intake and replay ok, clean stop");
}

/** An OTLP/HTTP (JSON) receiver: the names of the spans it was sent, with their job ids. */
function startCollector() {
  const spans: { name: string; jobId: string | undefined }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const body = (await request.json()) as {
        resourceSpans: { scopeSpans: { spans: { name: string; attributes?: { key: string; value: { stringValue?: string } }[] }[] }[] }[];
      };
      for (const span of body.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans))) {
        spans.push({ name: span.name, jobId: span.attributes?.find((a) => a.key === "lucius.job.id")?.value.stringValue });
      }
      return Response.json({});
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, spans, stop: () => server.stop(true) };
}

async function wholeStack(): Promise<void> {
  const collector = startCollector();
  const proc = Bun.spawn(["bun", resolve(root, "scripts/dev.ts"), "--runtime", "deno", "--port", "0", "--azurite-port", "0", "--broker-port", "0"], {
    cwd: root,
    env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "200" },
    stdout: "pipe",
    stderr: "inherit",
  });
  let output = "";
  void (async () => {
    for await (const chunk of proc.stdout) output += new TextDecoder().decode(chunk);
  })();
  try {
    const url = await until(async () => /dev: ready at (\S+)/.exec(output)?.[1], "the stack (Azurite, broker, Deno service, worker) ready");
    const accepted = await fetch(`${url}/v1/commands`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: command("d2", "document.ingest"),
    });
    if (accepted.status !== 202) fail(`intake on ledger answered ${accepted.status}`);
    const { jobId } = (await accepted.json()) as { jobId: string };
    const job = await until(async () => {
      const body = (await (await fetch(`${url}/v1/jobs/${jobId}`)).json()) as { status: string; steps: { status: string }[] };
      return body.status === "succeeded" ? body : undefined;
    }, "the job on ledger succeeded (published to the broker, step events back)");
    if (!job.steps.every((step) => step.status === "succeeded")) fail("a step did not succeed");
    console.log(`deno smoke: job ${jobId} on ledger (Azurite) through the dev broker and the worker: succeeded`);
    const names = await until(async () => {
      const ofJob = new Set(collector.spans.filter((span) => span.jobId === jobId).map((span) => span.name));
      const wanted = ["POST /v1/commands", "apply step-event succeeded"];
      return collector.spans.some((span) => span.name === wanted[0]) && [...ofJob].some((name) => name.startsWith("send ")) && ofJob.has(wanted[1]!)
        ? ofJob
        : undefined;
    }, "the service's spans (the request, the publishes, the events) at the OTLP receiver");
    console.log(`deno smoke: OpenTelemetry spans arrived: ${collector.spans.length} in all; of the job: ${[...names].sort().join(", ")}`);
  } catch (error) {
    console.error(output);
    throw error;
  } finally {
    proc.kill("SIGTERM");
  }
  const code = await proc.exited;
  collector.stop();
  if (code !== 0) fail(`bun run dev --runtime deno exited with ${code} on SIGTERM`);
}

try {
  await memoryIntake();
  await wholeStack();
} catch (error) {
  fail((error as Error).message);
}
console.log("deno smoke: passed");
