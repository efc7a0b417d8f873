/**
 * The console's first load in headless Chromium: bytes transferred (the page and the API answers
 * it fetches) and the time until a 100-job list is on screen, measured from navigation start, the
 * median of several fresh loads. A bare page of the same size served by Bun.serve beside it is the
 * baseline for the load time.
 *
 *   bun run bench:console [--loads 10]
 */
import { parseArgs } from "node:util";
import { launchBrowser } from "../dev/browser.ts";
import { ingestCommand, startTestRuntime } from "../dev/in-process-runtime.ts";

const { values } = parseArgs({ options: { loads: { type: "string", default: "10" } } });
const loads = Number(values.loads);
const KEY = "bench-console-key-0123456789";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const service = await startTestRuntime({ env: { LUCIUS_ADMIN_ENABLED: "true", LUCIUS_ADMIN_API_KEY: KEY, LUCIUS_LOG_LEVEL: "silent" } });
for (let i = 0; i < 100; i++) await service.postCommand(ingestCommand({ tenantId: "bench", correlationId: `c-${i}` }));
const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: service.runtime.fetch });
const consoleHtml = await (await service.request("/console")).text();
const bare = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: () => new Response(`<!doctype html><title>x</title><p>${"x".repeat(consoleHtml.length)}</p>`, { headers: { "content-type": "text/html" } }),
});
const browser = await launchBrowser();

async function load(url: string, ready: string, key: string | null) {
  const page = await browser.newPage();
  const client = await page.createCDPSession();
  await client.send("Network.enable");
  await client.send("Network.setCacheDisabled", { cacheDisabled: true });
  let bytes = 0;
  client.on("Network.loadingFinished", (event) => {
    bytes += event.encodedDataLength;
  });
  if (key !== null) await page.evaluateOnNewDocument((k) => sessionStorage.setItem("lucius-key", k), key);
  await page.goto(url);
  await page.waitForFunction(ready, { timeout: 10_000 });
  const ms = await page.evaluate(() => performance.now());
  await page.close();
  return { ms, bytes };
}

try {
  const consoleLoads = [];
  const bareLoads = [];
  for (let i = 0; i <= loads; i++) {
    const c = await load(`http://127.0.0.1:${server.port}/console#/jobs?tenant=bench`, 'document.querySelectorAll("tr[data-job]").length === 100', KEY);
    const b = await load(`http://127.0.0.1:${bare.port}/`, "document.readyState === 'complete'", null);
    if (i > 0) {
      consoleLoads.push(c);
      bareLoads.push(b);
    }
  }
  const consoleMs = median(consoleLoads.map((l) => l.ms));
  const bareMs = median(bareLoads.map((l) => l.ms));
  console.log(
    `console, 100 jobs listed: ${consoleMs.toFixed(0)} ms from navigation (median of ${loads}), ${(consoleLoads[0]!.bytes / 1024).toFixed(1)} KB transferred`,
  );
  console.log(`bare page of the same size:  ${bareMs.toFixed(0)} ms, ${(bareLoads[0]!.bytes / 1024).toFixed(1)} KB`);
  console.log(`ratio console / bare load: ${(consoleMs / bareMs).toFixed(2)}   (targets: under 300 ms, under 200 KB)`);
} finally {
  await browser.close();
  server.stop(true);
  bare.stop(true);
  await service.runtime.stop();
}
