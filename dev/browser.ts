/**
 * Headless Chromium for the console's browser tests, driven with puppeteer-core. The Debian
 * package `chromium` is used; when it is missing and we are root (CI machines), it is installed.
 */
import puppeteer, { type Browser } from "puppeteer-core";

function findChromium(): string | null {
  return Bun.which("chromium") ?? Bun.which("chromium-browser") ?? Bun.which("google-chrome");
}

async function installChromium(): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const install = Bun.spawn(
    ["sh", "-c", "apt-get install -y chromium >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1)"],
    {
      stdout: "inherit",
      stderr: "inherit",
    },
  );
  await install.exited;
}

export async function launchBrowser(): Promise<Browser> {
  let executablePath = findChromium();
  if (executablePath === null) {
    await installChromium();
    executablePath = findChromium();
  }
  if (executablePath === null) throw new Error("Chromium is needed for the console tests: apt-get install chromium");
  return puppeteer.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
}

/** Where the test run leaves its screenshots (kept out of git). */
export const ARTIFACTS_DIR = new URL("../artifacts/console/", import.meta.url).pathname;
