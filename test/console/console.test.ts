/**
 * The operator console in a real browser (headless Chromium), against the service on a real
 * socket with the dev broker: a job moving to `succeeded` appears by itself, a failed entry is
 * retried from the page and turns `sent`, a wrong key is refused. Screenshots go to
 * artifacts/console/.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "puppeteer-core";
import { ARTIFACTS_DIR, launchBrowser } from "../../dev/browser.ts";
import { eventually } from "../../dev/eventually.ts";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { loadProtocolFile } from "../../src/config/protocols.ts";
import { StorageUnavailableError } from "../../src/domain/errors.ts";
import { recordPublishFailure } from "../../src/domain/transitions.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

const KEY = "console-test-key-0123456789";
const memory = createMemoryStore();
/** Storage that can be taken down: its outbox reads fail as Azure's do when it does not answer. */
let storageDown = false;
const unavailable = () => new StorageUnavailableError("table storage did not answer", { retryAfterSeconds: 5 });
const store: JobStore = {
  ...memory,
  outboxStats: (now) => (storageDown ? Promise.reject(unavailable()) : memory.outboxStats(now)),
  listOutbox: (status, page) => (storageDown ? Promise.reject(unavailable()) : memory.listOutbox(status, page)),
};
let browser: Browser;
let bus: Awaited<ReturnType<typeof startBroker>>;
let service: Awaited<ReturnType<typeof startTestRuntime>>;
let server: ReturnType<typeof Bun.serve>;
let base: string;

/** document.ocr as bundled, and a graph: split → classify and embed (when the split says pdf) → merge, with a cleanup on failure. */
const PROTOCOLS = join(mkdtempSync(join(tmpdir(), "lucius-console-")), "protocols.json");
const anyObject = { type: "object" };
writeFileSync(
  PROTOCOLS,
  JSON.stringify({
    protocols: [
      { requestType: "document.ocr", version: 1, steps: [{ name: "ocr", topic: "ocr-requests", payloadSchema: anyObject }] },
      {
        requestType: "document.graph",
        version: 1,
        steps: [
          { name: "split", topic: "ocr-requests", payloadSchema: anyObject, after: [] },
          { name: "classify", topic: "vector-ingestion", payloadSchema: anyObject, after: ["split"] },
          { name: "embed", topic: "vector-ingestion", payloadSchema: anyObject, after: ["split"], when: { pointer: "/results/split/kind", equals: "pdf" } },
          { name: "merge", topic: "semantic-intelligence", payloadSchema: anyObject, after: ["classify", "embed"] },
        ],
        onFailure: { name: "cleanup", topic: "semantic-intelligence", payloadSchema: anyObject },
      },
      {
        requestType: "document.strict",
        version: 1,
        steps: ["first", "second"].map((name) => ({
          name,
          topic: "ocr-requests",
          payloadSchema: { type: "object", required: ["documentId"], properties: { documentId: { type: "string" } } },
        })),
      },
      {
        requestType: "document.mapped",
        version: 1,
        steps: [
          { name: "split", topic: "ocr-requests", payloadSchema: anyObject, after: [] },
          { name: "ocr", topic: "ocr-requests", payloadSchema: anyObject, map: { items: "/results/split/pages", maxConcurrency: 2 } },
        ],
      },
    ],
  }),
);

beforeAll(async () => {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  bus = await startBroker();
  service = await startTestRuntime({
    protocols: loadProtocolFile(PROTOCOLS, 0),
    store,
    env: { LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString, LUCIUS_ADMIN_ENABLED: "true", LUCIUS_ADMIN_API_KEY: KEY },
    publisherFromSettings: true,
  });
  // The background loops too: a bulk redrive is worked by one of them.
  service.runtime.start();
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: service.runtime.fetch });
  base = `http://127.0.0.1:${server.port}`;
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop(true);
  await service?.runtime.stop();
  await bus?.stop();
});

async function openConsole(hash: string, key: string | null): Promise<Page> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  await page.goto(`${base}/console?refresh=500${hash}`);
  if (key !== null) {
    await page.type("#key", key);
    await page.keyboard.press("Enter");
  }
  return page;
}

const submit = async () => ((await (await service.postCommand(ingestCommand({ requestType: "document.ocr" }))).json()) as { jobId: string }).jobId;

describe("operator console", () => {
  test("a wrong key is refused, and the page says so", async () => {
    const page = await openConsole("#/outbox", "wrong-key-of-someone");
    await page.waitForFunction(() => document.getElementById("banner")?.textContent?.includes("Refused"), { timeout: 5000 });
    expect(await page.$eval("#view", (el) => el.textContent)).not.toContain("Pending");
    await page.screenshot({ path: `${ARTIFACTS_DIR}wrong-key.png` });
    await page.close();
  });

  test("a job moving to succeeded appears in the tenant's list by itself, and its timeline shows the step", async () => {
    const jobId = await submit();
    const page = await openConsole("#/jobs?tenant=acme", KEY);
    await page.waitForSelector(`tr[data-job="${jobId}"]`, { timeout: 5000 });
    // The worker answers; the page, left alone, shows the job succeeded.
    await eventually(async () => (await service.runtime.store.getJob(jobId))?.outbox[0]?.status === "sent", { what: "the directive sent" });
    const stepId = `${jobId}.s0`;
    const answered = await service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "done", status: "succeeded", result: { pages: 3 } }),
    });
    expect(answered.status).toBe(202);
    await page.waitForSelector(`tr[data-job="${jobId}"] .status.succeeded`, { timeout: 5000 });
    await page.screenshot({ path: `${ARTIFACTS_DIR}jobs.png` });

    // Keyboard: the job's link opens its timeline.
    await page.focus(`tr[data-job="${jobId}"] a`);
    await page.keyboard.press("Enter");
    await page.waitForFunction((id) => location.hash === `#/job/${id}` && document.querySelector(".step.succeeded") !== null, { timeout: 5000 }, jobId);
    expect(await page.$eval(".step.succeeded", (el) => el.textContent)).toContain('"pages": 3');
    await page.screenshot({ path: `${ARTIFACTS_DIR}job.png` });
    await page.close();
  });

  test("a failed entry is retried from the page and turns sent", async () => {
    // A directive that gave up (its topic was missing, say), parked as failed.
    const parked = await storeJob(store, sampleJob("acme", { retryDelaySeconds: 3600 }));
    const now = new Date().toISOString();
    await store.saveChanges(parked.job.jobId, {
      outbox: [recordPublishFailure(parked.outbox[0]!, { error: "topic missing", retryable: false, now, nextAttemptAt: now, maxAttempts: 3 })],
    });
    const stored = parked;

    const page = await openConsole("#/outbox", KEY);
    const row = `tr[data-entry="${stored.outbox[0]!.outboxId}"]`;
    await page.waitForSelector(`${row} button`, { timeout: 5000 });
    expect(await page.$eval("#failed", (el) => el.textContent)).toBe("1");
    await page.screenshot({ path: `${ARTIFACTS_DIR}outbox-failed.png` });
    // Clicked inside the page in one step: the list re-renders every 500 ms, and a handle taken
    // before a re-render points at a button that is no longer there.
    await page.$eval(`${row} button`, (button) => (button as HTMLButtonElement).click());
    await page.waitForFunction(() => document.getElementById("failed")?.textContent === "0", { timeout: 5000 });
    expect((await store.getJob(parked.job.jobId))!.outbox[0]!.status).toBe("sent");
    expect(bus.broker.accepted("ocr-requests").some((m) => m.message_id === stored.outbox[0]!.outboxId)).toBe(true);
    await page.screenshot({ path: `${ARTIFACTS_DIR}outbox.png` });
    await page.close();
  });

  test("the page says when storage is down, and when the service stops answering", async () => {
    const own = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: service.runtime.fetch });
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${own.port}/console?refresh=500#/outbox`);
      await page.type("#key", KEY);
      await page.keyboard.press("Enter");
      await page.waitForSelector("#pending", { timeout: 5000 });
      storageDown = true;
      await page.waitForFunction(() => document.getElementById("banner")?.textContent?.includes("Storage is unavailable"), { timeout: 5000 });
      await page.screenshot({ path: `${ARTIFACTS_DIR}storage-down.png` });
      storageDown = false;
      await page.waitForFunction(() => document.getElementById("banner")?.textContent === "", { timeout: 5000 });
      await own.stop(true);
      await page.waitForFunction(() => document.getElementById("banner")?.textContent?.includes("does not answer"), { timeout: 5000 });
      await page.screenshot({ path: `${ARTIFACTS_DIR}service-down.png` });
    } finally {
      storageDown = false;
      await page.close();
      await own.stop(true);
    }
  });

  test("a job's steps are drawn as a graph: levels, an arrow from each predecessor, skipped steps and the compensation step", async () => {
    const response = await service.postCommand({ requestType: "document.graph", tenantId: "acme", payload: { documentId: "d1" } });
    const { jobId } = (await response.json()) as { jobId: string };
    const split = ((await (await service.request(`/v1/jobs/${jobId}`)).json()) as { steps: { stepId: string }[] }).steps[0]!.stepId;
    await service.request(`/v1/jobs/${jobId}/steps/${split}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "split-done", status: "succeeded", result: { kind: "docx" } }),
    });
    const page = await openConsole(`#/job/${jobId}`, KEY);
    await page.waitForSelector('.graph g[data-step="embed"].skipped', { timeout: 5000 });
    const arrows = await page.$$eval(".graph path[data-from]", (paths) =>
      paths.map((p) => `${p.getAttribute("data-from")}→${p.getAttribute("data-to")}`).sort(),
    );
    expect(arrows).toEqual(["classify→merge", "embed→merge", "split→classify", "split→embed"]);
    // Levels left to right: split, then classify and embed side by side, then merge; the compensation step last.
    const x = async (name: string) => page.$eval(`.graph g[data-step="${name}"] rect`, (rect) => Number(rect.getAttribute("x")));
    expect(await x("split")).toBeLessThan(await x("classify"));
    expect(await x("classify")).toBe(await x("embed"));
    expect(await x("embed")).toBeLessThan(await x("merge"));
    expect(await x("merge")).toBeLessThan(await x("cleanup"));
    expect(await page.$eval('.graph g[data-step="cleanup"] text', (t) => t.textContent)).toBe("on failure: cleanup · pending");
    await page.screenshot({ path: `${ARTIFACTS_DIR}job-graph.png` });
    await page.close();
  });

  test("a map step shows its counts, and its items on demand", async () => {
    const response = await service.postCommand({ requestType: "document.mapped", tenantId: "acme", payload: { documentId: "d1" } });
    const { jobId } = (await response.json()) as { jobId: string };
    await service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "split-done", status: "succeeded", result: { pages: ["a", "b", "c"] } }),
    });
    const page = await openConsole(`#/job/${jobId}`, KEY);
    await page.waitForSelector('.graph g[data-step="ocr"]', { timeout: 5000 });
    expect(await page.$eval('.graph g[data-step="ocr"] text', (t) => t.textContent)).toBe("ocr · initiated · 0/3");
    await page.$eval(".map button", (button) => (button as HTMLButtonElement).click());
    await page.waitForSelector('.items tr[data-item="1"]', { timeout: 5000 });
    expect(await page.$$eval(".items tbody tr", (rows) => rows.map((row) => row.getAttribute("data-item")))).toEqual(["0", "1"]);
    // Only the table (and, with more pages, a button): nothing else in the list.
    expect(await page.$eval(".items", (list) => list.textContent?.endsWith("—"))).toBe(true);
    await page.screenshot({ path: `${ARTIFACTS_DIR}job-map.png` });
    await page.close();
  });

  /**
   * Fills a form's fields and submits it in one task of the page: the view redraws when its
   * stream or its poll says so, and a redraw between typing and submitting replaced the form
   * (a flake under load). What is tested here is what the page does with the answer.
   */
  async function fillAndSubmit(page: Awaited<ReturnType<typeof openConsole>>, form: string, fields: { select?: string; textarea: string }) {
    // One evaluate (not $eval: that finds the element in one round trip and uses it in another).
    const submitted = await page.evaluate(
      (selector, values) => {
        const f = document.querySelector(selector) as HTMLFormElement | null;
        if (!f) return false;
        if (values.select !== undefined) (f.querySelector("select") as HTMLSelectElement).value = values.select;
        (f.querySelector("textarea") as HTMLTextAreaElement).value = values.textarea;
        f.requestSubmit();
        return true;
      },
      form,
      fields,
    );
    expect(submitted).toBe(true);
  }

  /** A document.strict job whose first step failed for good with `code`. */
  async function failedStrictJob(code: string): Promise<string> {
    const { jobId } = (await (await service.postCommand({ requestType: "document.strict", tenantId: "acme", payload: { documentId: "d1" } })).json()) as {
      jobId: string;
    };
    const failed = await service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: `fail-${jobId}`, status: "failed", error: { code, message: "down" } }),
    });
    expect(((await failed.json()) as { jobStatus: string }).jobStatus).toBe("failed");
    return jobId;
  }

  test("a failed job is repaired from the page: a bad payload patch shows the server's 422 by field, a step skipped with a result redrives it, and the history shows who did what", async () => {
    const jobId = await failedStrictJob("worker-bug");
    const page = await openConsole(`#/job/${jobId}`, KEY);
    await page.waitForSelector('form[data-action="redrive-patch"] textarea', { timeout: 5000 });
    await fillAndSubmit(page, 'form[data-action="redrive-patch"]', { textarea: '{"documentId": 5}' });
    await page.waitForSelector('.problems li[data-path="/payload/documentId"]', { timeout: 5000 });
    expect((await service.runtime.store.getJob(jobId))!.job).toMatchObject({ status: "failed", redrives: 0 });
    await page.screenshot({ path: `${ARTIFACTS_DIR}job-redrive-422.png` });

    await fillAndSubmit(page, 'form[data-action="skip"]', { select: "first", textarea: '{"text": "typed by hand"}' });
    await page.waitForSelector('ol.history li[data-action="redrive"]', { timeout: 5000 });
    expect(await page.$eval('ol.history li[data-action="redrive"]', (li) => li.textContent)).toContain("by admin-key");
    const stored = (await service.runtime.store.getJob(jobId))!;
    expect(stored.job).toMatchObject({ status: "in_progress", redrives: 1 });
    expect(stored.steps[0]).toMatchObject({ status: "succeeded", result: { text: "typed by hand" } });
    expect(stored.outbox.find((o) => o.stepId === `${jobId}.s1`)?.results).toEqual({ first: { text: "typed by hand" } });
    await page.screenshot({ path: `${ARTIFACTS_DIR}job-redriven.png` });
    await page.close();
  }, 15_000);

  test("a job is paused and resumed from the page, and its history says so", async () => {
    const { jobId } = (await (await service.postCommand({ requestType: "document.strict", tenantId: "acme", payload: { documentId: "d1" } })).json()) as {
      jobId: string;
    };
    const page = await openConsole(`#/job/${jobId}`, KEY);
    await page.waitForSelector('button[data-action="pause"]', { timeout: 5000 });
    await page.$eval('button[data-action="pause"]', (button) => (button as HTMLButtonElement).click());
    await page.waitForSelector('button[data-action="resume"]', { timeout: 5000 });
    expect((await service.runtime.store.getJob(jobId))!.job.paused).toBe(true);
    await page.$eval('button[data-action="resume"]', (button) => (button as HTMLButtonElement).click());
    await page.waitForSelector('ol.history li[data-action="resume"]', { timeout: 5000 });
    expect(await page.$$eval("ol.history li", (items) => items.map((li) => li.getAttribute("data-action")))).toEqual(["accepted", "pause", "resume"]);
    expect((await service.runtime.store.getJob(jobId))!.job.paused).toBe(false);
    await page.close();
  }, 15_000);

  test("a bulk redrive is started from the page and its progress shows as it runs", async () => {
    const jobIds = await Promise.all([1, 2, 3].map(() => failedStrictJob("bulk-page")));
    const page = await openConsole("#/bulk", KEY);
    await page.waitForSelector('form[data-action="bulk"]', { timeout: 5000 });
    await page.type('form[data-action="bulk"] input[name="errorCode"]', "bulk-page");
    await page.$eval('form[data-action="bulk"]', (form) => (form as HTMLFormElement).requestSubmit());
    await page.waitForFunction(() => document.getElementById("redriven")?.textContent === "3", { timeout: 10_000 });
    expect(await page.$eval("#matched", (el) => el.textContent)).toBe("3");
    for (const jobId of jobIds) expect((await service.runtime.store.getJob(jobId))!.job.redrives).toBe(1);
    await page.screenshot({ path: `${ARTIFACTS_DIR}bulk-redrive.png` });
    await page.close();
  }, 15_000);

  test("the job and jobs views follow the service's streams: a change shows at once, with the timer a minute away", async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/console?refresh=60000#/jobs?tenant=acme`);
    await page.type("#key", KEY);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("view")?.dataset.live === "true", { timeout: 5000 });
    const jobId = await submit();
    await page.waitForSelector(`tr[data-job="${jobId}"]`, { timeout: 3000 });

    await page.goto(`${base}/console?refresh=60000#/job/${jobId}`);
    await page.waitForFunction(() => document.getElementById("view")?.dataset.live === "true" && document.querySelector(".step") !== null, { timeout: 5000 });
    await service.request(`/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ eventId: "live-done", status: "succeeded", result: { live: true } }),
    });
    await page.waitForSelector(".step.succeeded", { timeout: 3000 });
    await page.close();
  }, 15_000);
});
