import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { ingestCommand } from "../dev/in-process-runtime.ts";
import { maskSecrets } from "../src/cli.ts";
import { VERSION } from "../src/version.ts";
import { startService } from "./support/service-process.ts";

const MAIN = resolve(import.meta.dir, "../src/main.ts");

async function run(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawn(["bun", MAIN, ...args], { env: { PATH: process.env.PATH ?? "", ...env }, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

describe("lucius subcommands", () => {
  test("--version prints the version", async () => {
    const { stdout, code } = await run(["--version"]);
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(VERSION);
  });

  test("--help lists every subcommand", async () => {
    const { stdout, code } = await run(["--help"]);
    expect(code).toBe(0);
    for (const word of ["serve", "healthcheck", "config check", "--version"]) expect(stdout).toContain(word);
  });

  test("an unknown command exits 2 with the usage", async () => {
    const { stderr, code } = await run(["frobnicate"]);
    expect(code).toBe(2);
    expect(stderr).toContain("unknown command 'frobnicate'");
  });

  test("config check prints the effective configuration with every secret masked", async () => {
    const { stdout, code } = await run(["config", "check"], {
      LUCIUS_STORAGE_BACKEND: "ledger",
      LUCIUS_TABLE_CONNECTION: "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LXRhYmxlLWtleQ==;EndpointSuffix=core.windows.net",
      LUCIUS_SERVICEBUS_CONNECTION: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=sb-secret-key",
      LUCIUS_ADMIN_ENABLED: "true",
      LUCIUS_ADMIN_API_KEY: "admin-secret-0123456789",
    });
    expect(code).toBe(0);
    const printed = JSON.parse(stdout) as {
      settings: { storageBackend: string; tableConnection: string; serviceBusConnection: string; admin: { apiKey: string } };
      protocols: { requestTypes: Record<string, string[]> };
    };
    expect(printed.settings.storageBackend).toBe("ledger");
    expect(printed.settings.tableConnection).toContain("AccountName=acct;AccountKey=***");
    expect(printed.settings.serviceBusConnection).toContain("SharedAccessKey=***");
    expect(printed.settings.admin.apiKey).toBe("***");
    expect(printed.protocols.requestTypes["document.ingest"]).toEqual(["ocr → ocr-requests", "embed → vector-ingestion", "enrich → semantic-intelligence"]);
    for (const secret of ["c2VjcmV0LXRhYmxlLWtleQ==", "sb-secret-key", "admin-secret-0123456789"]) expect(stdout).not.toContain(secret);
  });

  test("config check with bad settings or a broken protocol file exits 1 naming them", async () => {
    const bad = await run(["config", "check"], { LUCIUS_PORT: "-1", LUCIUS_LOG_LEVEL: "loud" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("LUCIUS_PORT");
    expect(bad.stderr).toContain("LUCIUS_LOG_LEVEL");
    const broken = await run(["config", "check"], { LUCIUS_PROTOCOLS_FILE: "/nonexistent/protocols.json" });
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain("/nonexistent/protocols.json");
  });

  test("healthcheck exits 0 against a running service and 1 when nothing answers", async () => {
    const service = await startService();
    try {
      const env = { LUCIUS_PORT: service.url.port };
      expect((await fetch(new URL("/v1/commands", service.url), { method: "POST", body: JSON.stringify(ingestCommand()) })).status).toBe(202);
      expect((await run(["healthcheck"], env)).code).toBe(0);
      expect((await run(["healthcheck", "--ready"], env)).code).toBe(0);
    } finally {
      service.proc.kill("SIGTERM");
      await service.proc.exited;
    }
    const down = await run(["healthcheck"], { LUCIUS_PORT: service.url.port });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain("/healthz");
  });
});

test("maskSecrets hides keys and signatures, keeps the rest", () => {
  expect(maskSecrets("Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=k;")).toBe("Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=***;");
  expect(maskSecrets("TableEndpoint=https://t;SharedAccessSignature=sv=2020&sig=abc")).toBe("TableEndpoint=https://t;SharedAccessSignature=***");
  expect(maskSecrets(null)).toBeNull();
});
