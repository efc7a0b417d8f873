/** Benchmark helpers: the service and the steerable dev broker as child processes on free ports. */
import { resolve } from "node:path";

export async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

/** Scripts are named from the repository root, e.g. "src/main.ts". */
const REPOSITORY_ROOT = resolve(import.meta.dir, "../..");

/**
 * Starts `bun <script>` (relative to the repository root) on a free port (as LUCIUS_PORT and PORT)
 * and waits until /healthz answers. Its stdout goes to `stdout` (ignored by default: a full pipe would stall it).
 */
export async function startScriptProcess(
  script: string,
  env: Record<string, string> = {},
  options: { stdout?: "ignore" | ReturnType<typeof Bun.file>; flags?: string[] } = {},
) {
  const port = await freePort();
  const proc = Bun.spawn(["bun", ...(options.flags ?? []), resolve(REPOSITORY_ROOT, script)], {
    env: { PATH: process.env.PATH ?? "", LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: String(port), PORT: String(port), ...env },
    stdout: options.stdout ?? "ignore",
    stderr: "inherit",
  });
  const url = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 15_000; ; ) {
    try {
      await fetch(`${url}/healthz`);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`${script} did not start`);
      await Bun.sleep(20);
    }
  }
  return {
    url,
    pid: proc.pid,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

/** Starts `bun src/main.ts` with `env` (logs at warn) and waits until /healthz answers; its output is not read. */
export function startServiceProcess(env: Record<string, string> = {}) {
  // BENCH_SERVICE_PROFILE=<dir>: a CPU profile of the service, written when it stops.
  const profile = process.env.BENCH_SERVICE_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_SERVICE_PROFILE}`] : [];
  // BENCH_SERVICE_LOG=<path>: each service's log lines in <path>.<8 random hex>, for finding out where the time goes.
  const log = process.env.BENCH_SERVICE_LOG;
  return startScriptProcess(
    "src/main.ts",
    { LUCIUS_LOG_LEVEL: log ? "info" : "warn", ...env },
    {
      flags: profile,
      ...(log ? { stdout: Bun.file(`${log}.${crypto.randomUUID().slice(0, 8)}`) } : {}),
    },
  );
}

/** The dev broker in its own process (bench/broker-process.ts), steered line by line. */
export async function startBrokerProcess() {
  const proc = Bun.spawn(["bun", resolve(import.meta.dir, "broker-process.ts")], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  async function line(): Promise<string> {
    for (;;) {
      const newline = buffered.indexOf("\n");
      if (newline >= 0) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        return text;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("the broker process ended");
      buffered += decoder.decode(value);
    }
  }
  const connection = await line();
  const ask = async (command: string) => {
    proc.stdin.write(`${command}\n`);
    proc.stdin.flush();
    return line();
  };
  return {
    connection,
    pid: proc.pid,
    down: () => ask("down"),
    up: () => ask("up"),
    count: async (entity: string) => Number(await ask(`count ${entity}`)),
    async stop() {
      proc.stdin.end();
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
