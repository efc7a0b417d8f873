/**
 * The subcommands besides `serve`: `healthcheck`, `config check`, `--version`, `--help`.
 * Runtime-neutral (fetch, console); main.ts dispatches to them.
 */
import { parseArgs } from "node:util";
import { newApiKey } from "./auth/api-key-authenticator.ts";
import { PERMISSIONS, type Permission } from "./auth/caller.ts";
import { loadProtocols, ProtocolFileError } from "./config/protocols.ts";
import { loadSettings, type Settings, SettingsError } from "./config/settings.ts";
import { VERSION } from "./version.ts";

export const USAGE = `lucius ${VERSION} — command orchestrator with a transactional outbox

Usage:
  lucius [serve]            start the service (the default)
  lucius healthcheck        exit 0 when the running service answers GET /healthz, else 1
  lucius healthcheck --ready   the same against GET /readyz
  lucius config check       validate the settings and the protocol file; print the effective
                            configuration with secrets masked; exit 1 on any problem
  lucius auth new-key --name NAME --tenants a,b|* --roles r1,r2
                            print a new API key and its LUCIUS_AUTH_KEYS_FILE entry
                            (roles: commands.submit, jobs.read, steps.report, outbox.admin)
  lucius --version          print the version
  lucius --help             print this

Configuration comes from LUCIUS_* environment variables (see the README).`;

type Env = Record<string, string | undefined>;

/** Connection strings without their keys and signatures. */
export function maskSecrets(connection: string | null): string | null {
  if (connection === null) return null;
  return connection.replace(/((?:AccountKey|SharedAccessKey|SharedAccessSignature)=)[^;]*/gi, "$1***");
}

function effectiveConfiguration(settings: Settings) {
  return {
    ...settings,
    tableConnection: maskSecrets(settings.tableConnection),
    serviceBusConnection: maskSecrets(settings.serviceBusConnection),
    admin: { ...settings.admin, apiKey: settings.admin.apiKey === null ? null : "***" },
    auth: settings.auth,
  };
}

function load(env: Env): { settings: Settings } | { problem: string } {
  try {
    return { settings: loadSettings(env) };
  } catch (error) {
    if (error instanceof SettingsError) return { problem: error.message };
    throw error;
  }
}

export function configCheck(env: Env, out: (line: string) => void, err: (line: string) => void): number {
  const loaded = load(env);
  if ("problem" in loaded) {
    err(`lucius: ${loaded.problem}`);
    return 1;
  }
  try {
    const protocols = loadProtocols(loaded.settings);
    out(
      JSON.stringify(
        {
          version: VERSION,
          settings: effectiveConfiguration(loaded.settings),
          protocols: {
            source: protocols.source,
            requestTypes: Object.fromEntries(protocols.list().map((p) => [p.requestType, p.steps.map((s) => `${s.name} → ${s.topic}`)])),
          },
        },
        null,
        2,
      ),
    );
    return 0;
  } catch (error) {
    if (error instanceof ProtocolFileError) {
      err(`lucius: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

export async function healthcheck(env: Env, ready: boolean, err: (line: string) => void): Promise<number> {
  const loaded = load(env);
  if ("problem" in loaded) {
    err(`lucius: ${loaded.problem}`);
    return 1;
  }
  const { host, port } = loaded.settings;
  const target = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  const url = `http://${target}:${port}${ready ? "/readyz" : "/healthz"}`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
    if (response.status === 200) return 0;
    err(`lucius healthcheck: ${url} answered ${response.status}`);
  } catch (error) {
    err(`lucius healthcheck: ${url}: ${(error as Error).message}`);
  }
  return 1;
}

/**
 * `lucius auth new-key`: a random key, printed once, and the entry to add to the keys file (which
 * holds only its SHA-256). The key is shown here and nowhere else.
 */
export function newKeyCommand(args: string[], out: (line: string) => void, err: (line: string) => void): number {
  let values: { name?: string | undefined; tenants?: string | undefined; roles?: string | undefined };
  try {
    ({ values } = parseArgs({ args, options: { name: { type: "string" }, tenants: { type: "string" }, roles: { type: "string" } } }));
  } catch (error) {
    err(`lucius auth new-key: ${(error as Error).message}`);
    return 2;
  }
  const problems: string[] = [];
  const name = values.name?.trim() ?? "";
  if (name === "" || name.length > 100) problems.push("--name: 1-100 characters, to tell keys apart");
  const tenants = (values.tenants ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");
  if (tenants.length === 0) problems.push("--tenants: a comma-separated list of tenant ids, or *");
  const roles = (values.roles ?? "")
    .split(",")
    .map((r) => r.trim())
    .filter((r) => r !== "");
  const unknown = roles.filter((r) => !(PERMISSIONS as readonly string[]).includes(r));
  if (roles.length === 0 || unknown.length > 0)
    problems.push(`--roles: a comma-separated list of ${PERMISSIONS.join(", ")}${unknown.length > 0 ? ` (unknown: ${unknown.join(", ")})` : ""}`);
  if (problems.length > 0) {
    err(`lucius auth new-key:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    return 2;
  }
  const { key, entry } = newApiKey({ name, tenants: tenants.includes("*") ? "*" : tenants, roles: [...new Set(roles)] as Permission[] });
  out(`key (give it to the client; it is not stored anywhere): ${key}`);
  out(`entry for LUCIUS_AUTH_KEYS_FILE: ${JSON.stringify(entry)}`);
  return 0;
}
