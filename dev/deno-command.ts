/**
 * How the scripts run the service on Deno: the native binary of the `deno` npm package, and
 * `deno run` with the permissions the service needs (deno.json's `start` task says the same).
 * Not `node_modules/.bin/deno`: that is a Node shim that does not pass SIGTERM on; not
 * `deno task`: its runner ends with 143 on SIGTERM instead of passing it on.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";

const root = resolve(import.meta.dir, "..");

export const DENO_RUN = ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-sys", "src/deno.ts"];

/** The Deno binary: where the package's install step puts it, else in its platform package. */
export function denoExecutable(): string {
  const candidates = [
    resolve(root, "node_modules/deno/deno"),
    resolve(root, `node_modules/@deno/${process.platform}-${process.arch === "x64" ? "x64" : process.arch}-glibc/deno`),
    resolve(root, `node_modules/@deno/${process.platform}-${process.arch}/deno`),
  ];
  const found = candidates.find((path) => existsSync(path));
  if (!found) throw new Error("no Deno binary under node_modules: run bun install (the deno package is a dev dependency)");
  return found;
}
