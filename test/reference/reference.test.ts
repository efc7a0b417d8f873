/**
 * The API reference page in headless Chromium with every other origin cut off: it renders the
 * service's own routes from assets the service serves, under a CSP that names no other origin.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import type { Browser } from "puppeteer-core";
import { ARTIFACTS_DIR, launchBrowser } from "../../dev/browser.ts";
import { startTestRuntime } from "../../dev/in-process-runtime.ts";

let browser: Browser;
let service: Awaited<ReturnType<typeof startTestRuntime>>;
let server: ReturnType<typeof Bun.serve>;
let base: string;

beforeAll(async () => {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  service = await startTestRuntime();
  server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: service.runtime.fetch });
  base = `http://127.0.0.1:${server.port}`;
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop(true);
  await service?.runtime.stop();
});

describe("API reference page", () => {
  test("renders the service's routes in Chromium with the network cut off, asking no other origin for anything", async () => {
    const page = await browser.newPage();
    const elsewhere: string[] = [];
    const violations: string[] = [];
    await page.setRequestInterception(true);
    page.on("request", (request) => {
      if (request.url().startsWith(`${base}/`) || request.url().startsWith("data:")) return void request.continue();
      elsewhere.push(request.url());
      void request.abort("internetdisconnected");
    });
    page.on("console", (message) => {
      if (message.text().includes("Content Security Policy")) violations.push(message.text());
    });
    const response = await page.goto(`${base}/openapi`);
    expect(response?.status()).toBe(200);
    await page.waitForFunction(() => document.body.textContent?.includes("/v1/commands"), { timeout: 10_000 });
    expect(await page.$eval(".info .title", (el) => el.textContent)).toContain("Lucius Orchestrator");
    await page.screenshot({ path: `${ARTIFACTS_DIR}api-reference.png` });
    await page.close();
    expect(elsewhere).toEqual([]);
    expect(violations).toEqual([]);
  });

  test("the page and its assets carry a CSP that allows this origin and no other", async () => {
    for (const path of ["/openapi", "/openapi/assets/swagger-ui-bundle.js", "/openapi/assets/swagger-ui.css", "/openapi/assets/start.js"]) {
      const response = await service.request(path);
      expect(response.status).toBe(200);
      const csp = response.headers.get("content-security-policy") ?? "";
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toMatch(/https?:|\*/);
    }
    expect(await (await service.request("/openapi")).text()).not.toMatch(/https?:\/\//);
  });

  test("an unknown asset is a problem, not an empty answer", async () => {
    for (const name of ["other.js", "constructor", "__proto__"]) {
      const response = await service.request(`/openapi/assets/${name}`);
      expect(response.status).toBe(404);
      expect(response.headers.get("content-type")).toStartWith("application/problem+json");
    }
  });
});
