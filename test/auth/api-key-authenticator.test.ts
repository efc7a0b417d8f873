/** API keys from a keys file of digests: right, wrong, revoked, and a file the start refuses. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { newApiKey } from "../../src/auth/api-key-authenticator.ts";
import { newKeyCommand } from "../../src/cli.ts";
import { SettingsError } from "../../src/config/settings.ts";

const dir = mkdtempSync(join(tmpdir(), "lucius-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keysFile(name: string, entries: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof entries === "string" ? entries : JSON.stringify(entries));
  return path;
}

const submitter = newApiKey({ name: "submitter", tenants: ["acme"], roles: ["commands.submit"] });
const other = newApiKey({ name: "reader", tenants: "*", roles: ["jobs.read"] });

const serviceWith = (path: string) => startTestRuntime({ env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: path } });

describe("LUCIUS_AUTH_MODE=apikey", () => {
  test("a listed key is accepted in X-API-Key or as a bearer token; an unknown one is 401 invalid_token", async () => {
    const svc = await serviceWith(keysFile("both.json", [submitter.entry, other.entry]));
    expect((await svc.postCommand(ingestCommand(), { "x-api-key": submitter.key })).status).toBe(202);
    expect((await svc.postCommand(ingestCommand(), { authorization: `Bearer ${submitter.key}` })).status).toBe(202);
    const wrong = await svc.postCommand(ingestCommand(), { "x-api-key": `${submitter.key}x` });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("www-authenticate")).toStartWith('Bearer realm="lucius", error="invalid_token"');
    expect((await svc.postCommand(ingestCommand())).status).toBe(401);
  });

  test("a key removed from the file stops working at the next start", async () => {
    const path = keysFile("revoke.json", [submitter.entry, other.entry]);
    expect((await (await serviceWith(path)).postCommand(ingestCommand(), { "x-api-key": submitter.key })).status).toBe(202);
    writeFileSync(path, JSON.stringify([other.entry]));
    expect((await (await serviceWith(path)).postCommand(ingestCommand(), { "x-api-key": submitter.key })).status).toBe(401);
  });

  test.each([
    ["not JSON", "{ nope", /LUCIUS_AUTH_KEYS_FILE .*bad\.json/],
    ["a key in clear instead of its digest", [{ name: "x", key: "secret", tenants: "*", roles: [] }], /keys file format/],
    ["an unknown role", [{ ...submitter.entry, roles: ["everything"] }], /\/0\/roles/],
    ["two entries with one name", [submitter.entry, { ...other.entry, name: "submitter" }], /duplicate name 'submitter'/],
  ])("a keys file with %s stops the start naming the file and the problem", async (_name, content, reason) => {
    const path = keysFile("bad.json", content);
    const started = serviceWith(path);
    await expect(started).rejects.toBeInstanceOf(SettingsError);
    await expect(started).rejects.toThrow(reason);
  });

  test("lucius auth new-key prints a key once and an entry that grants exactly it", async () => {
    const out: string[] = [];
    expect(
      newKeyCommand(
        ["--name", "ci", "--tenants", "acme", "--roles", "commands.submit"],
        (line) => out.push(line),
        () => {},
      ),
    ).toBe(0);
    const key = /: (lk_\S+)$/.exec(out[0]!)![1]!;
    const entry = JSON.parse(out[1]!.slice(out[1]!.indexOf("{")));
    expect(JSON.stringify(entry)).not.toContain(key);
    const svc = await serviceWith(keysFile("new.json", [entry]));
    expect((await svc.postCommand(ingestCommand(), { "x-api-key": key })).status).toBe(202);
    expect((await svc.postCommand(ingestCommand({ tenantId: "globex" }), { "x-api-key": key })).status).toBe(403);
  });

  test("lucius auth new-key refuses missing or unknown arguments, naming each", () => {
    const err: string[] = [];
    expect(
      newKeyCommand(
        ["--roles", "root"],
        () => {},
        (line) => err.push(line),
      ),
    ).toBe(2);
    expect(err.join("\n")).toContain("--name");
    expect(err.join("\n")).toContain("--tenants");
    expect(err.join("\n")).toContain("unknown: root");
  });
});
