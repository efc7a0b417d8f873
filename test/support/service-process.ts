/** Runs the service as a child process, the way an operator runs it: src/main.ts on Bun, or src/deno.ts on Deno. */
import { resolve } from "node:path";
import { DENO_RUN, denoExecutable } from "../../dev/deno-command.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = resolve(ROOT, "src/main.ts");

export type Runtime = "bun" | "deno";

function commandFor(runtime: Runtime): string[] {
  return runtime === "bun" ? ["bun", MAIN] : [denoExecutable(), ...DENO_RUN];
}

export interface ServiceProcess {
  url: URL;
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** Every stdout line so far, parsed as JSON log records. */
  logs: Record<string, unknown>[];
}

function baseEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: "0", ...env };
}

/** Starts the service and resolves once its "listening" line names the URL. */
export async function startService(env: Record<string, string> = {}, timeoutMs = 10_000, runtime: Runtime = "bun"): Promise<ServiceProcess> {
  const proc = Bun.spawn(commandFor(runtime), { cwd: ROOT, env: baseEnv(env), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const logs: Record<string, unknown>[] = [];
  let resolveUrl!: (url: URL) => void;
  const listening = new Promise<URL>((res) => (resolveUrl = res));
  void (async () => {
    let buffered = "";
    for await (const chunk of proc.stdout) {
      buffered += new TextDecoder().decode(chunk);
      for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const record = JSON.parse(line) as Record<string, unknown>;
          logs.push(record);
          if (record.msg === "lucius listening") resolveUrl(new URL(String(record.url)));
        } catch {
          // not a log line
        }
      }
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("service did not start in time")), timeoutMs);
    void proc.exited.then(async (code) => reject(new Error(`service exited with ${code}: ${await new Response(proc.stderr).text()}`)));
  });
  try {
    const url = await Promise.race([listening, failed]);
    return { url, proc, logs };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the service expecting it to refuse to start; returns its exit code and stderr. */
export async function runServiceExpectingExit(env: Record<string, string>, timeoutMs = 10_000): Promise<{ code: number; stderr: string }> {
  const proc = Bun.spawn(["bun", MAIN], { env: baseEnv(env), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const code = await proc.exited;
  clearTimeout(timer);
  return { code, stderr: await new Response(proc.stderr).text() };
}
