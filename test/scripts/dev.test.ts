/**
 * `bun run dev` as a newcomer runs it: the whole stack starts, the README's command ends as a
 * `succeeded` job with every step's result, and stopping it stops everything it started.
 */
import { expect, test } from "bun:test";
import { resolve } from "node:path";
import { eventually } from "../../dev/eventually.ts";

const DEV = resolve(import.meta.dir, "../../scripts/dev.ts");

test("bun run dev: the README's command runs to succeeded through Azurite, the broker and the example worker; SIGTERM stops every process", async () => {
  const proc = Bun.spawn(["bun", DEV, "--port", "0", "--azurite-port", "0", "--broker-port", "0"], { stdout: "pipe", stderr: "pipe" });
  const lines: string[] = [];
  void (async () => {
    let buffered = "";
    for await (const chunk of proc.stdout) {
      buffered += new TextDecoder().decode(chunk);
      for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
        lines.push(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
  })();
  try {
    const url = await eventually(() => lines.find((line) => line.startsWith("dev: ready at "))?.slice("dev: ready at ".length), {
      timeoutMs: 30_000,
      what: "the stack ready",
    });
    const accepted = await fetch(`${url}/v1/commands`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        requestType: "document.ingest",
        tenantId: "acme",
        payload: { documentId: "d1", documentUri: "https://files.example/d1.pdf", contentType: "application/pdf" },
      }),
    });
    expect(accepted.status).toBe(202);
    const { jobId } = (await accepted.json()) as { jobId: string };
    const job = await eventually(
      async () => {
        const body = (await (await fetch(`${url}/v1/jobs/${jobId}`)).json()) as { status: string; steps: { name: string; status: string; result: unknown }[] };
        return body.status === "succeeded" && body;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: "the job succeeded" },
    );
    expect(job.steps.map((s) => [s.name, s.status])).toEqual([
      ["ocr", "succeeded"],
      ["embed", "succeeded"],
      ["enrich", "succeeded"],
    ]);
    expect(job.steps.every((s) => s.result !== null)).toBe(true);
    // The example worker's process answered it (its library logs each step it reported).
    expect(lines.some((line) => line.startsWith("[worker]") && line.includes('"step":"enrich"') && line.includes(jobId))).toBe(true);
    // document.pages: split, its pages OCR'd by one message each beside classify, then merge.
    const pages = await fetch(`${url}/v1/commands`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        requestType: "document.pages",
        tenantId: "acme",
        payload: { documentId: "d2", documentUri: "https://files.example/d2.pdf", contentType: "application/pdf" },
      }),
    });
    const paged = (await pages.json()) as { jobId: string };
    const split = await eventually(
      async () => {
        const body = (await (await fetch(`${url}/v1/jobs/${paged.jobId}`)).json()) as {
          status: string;
          steps: { name: string; status: string; map?: { succeeded: number } }[];
        };
        return body.status === "succeeded" && body;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: "the document.pages job succeeded" },
    );
    expect(split.steps.map((s) => [s.name, s.status])).toEqual([
      ["split", "succeeded"],
      ["ocr", "succeeded"],
      ["classify", "succeeded"],
      ["merge", "succeeded"],
      ["cleanup", "skipped"],
    ]);
    expect(split.steps[1]!.map?.succeeded).toBe(3);
  } finally {
    proc.kill("SIGTERM");
  }
  expect(await proc.exited).toBe(0);
  // Every child was stopped: nothing answers on the service's port any more.
  const url = lines.find((line) => line.startsWith("dev: ready at "))?.slice("dev: ready at ".length);
  if (url)
    expect(
      await fetch(`${url}/healthz`).then(
        () => "answered",
        () => "refused",
      ),
    ).toBe("refused");
}, 60_000);
