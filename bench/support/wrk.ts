/** Runs `wrk` (an external load generator: it cannot cap what it measures the way a generator in the same runtime does). */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface WrkResult {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Non-2xx/3xx answers and socket errors. */
  errors: number;
}

/** Installs wrk from apt when missing (the machines here are Debian, and we are root). */
export async function ensureWrk(): Promise<void> {
  if (Bun.which("wrk")) return;
  console.log("wrk is missing: apt-get install -y wrk");
  const install = Bun.spawn(["sh", "-c", "apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null)"], {
    stdout: "inherit",
    stderr: "inherit",
  });
  if ((await install.exited) !== 0 || !Bun.which("wrk")) throw new Error("could not install wrk (apt-get install wrk)");
}

const dir = mkdtempSync(join(tmpdir(), "lucius-wrk-"));

/** POSTs `body` to `url` with `headers` from `connections` connections on one thread for `seconds`. */
export async function wrk(url: string, options: { body: string; headers?: Record<string, string>; connections: number; seconds: number }): Promise<WrkResult> {
  const script = join(dir, `post-${crypto.randomUUID()}.lua`);
  const headers = { "Content-Type": "application/json", ...options.headers };
  writeFileSync(
    script,
    [
      'wrk.method = "POST"',
      `wrk.body = ${JSON.stringify(options.body)}`,
      ...Object.entries(headers).map(([name, value]) => `wrk.headers[${JSON.stringify(name)}] = ${JSON.stringify(value)}`),
    ].join("\n"),
  );
  const proc = Bun.spawn(["wrk", "-t1", `-c${options.connections}`, `-d${options.seconds}s`, "--latency", "-s", script, url], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const output = await new Response(proc.stdout).text();
  await proc.exited;
  const number = (pattern: RegExp) => Number(pattern.exec(output)?.[1] ?? Number.NaN);
  const ms = (pattern: RegExp) => {
    const match = pattern.exec(output);
    if (!match) return Number.NaN;
    const value = Number(match[1]);
    return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
  };
  const requests = number(/(\d+) requests in/);
  const non2xx = number(/Non-2xx or 3xx responses: (\d+)/);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  return {
    perSecond: number(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: ms(/\s50%\s+([\d.]+)(us|ms|s)/),
    p99Ms: ms(/\s99%\s+([\d.]+)(us|ms|s)/),
    requests,
    errors: (Number.isNaN(non2xx) ? 0 : non2xx) + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}
