/**
 * The subcommands besides `serve`: `healthcheck`, `config check`, `--version`, `--help`.
 * Runtime-neutral (fetch, console); main.ts dispatches to them.
 */
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
