/**
 * What many test files set up the same way: a temporary directory removed after the file's
 * tests, a protocols file in it, and teardowns that each test pushes and that run after it.
 * Call these at the top level of a test file: the hooks they register are that file's.
 */
import { afterAll, afterEach } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadProtocolFile, type ProtocolRegistry } from "../../src/config/protocols.ts";

/** A fresh directory `lucius-<name>-…`, removed after the file's tests. */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lucius-${name}-`));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `protocols` written as `dir`/protocols.json: its path, and the registry the service would load from it. */
export function writeProtocols(dir: string, protocols: unknown[]): { protocolsFile: string; protocols: ProtocolRegistry } {
  const protocolsFile = join(dir, "protocols.json");
  writeFileSync(protocolsFile, JSON.stringify({ protocols }));
  return { protocolsFile, protocols: loadProtocolFile(protocolsFile, 0) };
}

/**
 * Teardowns a test pushes (a broker, a service, a process), run after it, last first. With
 * `ignoreErrors`, one that throws (a process already killed) does not fail the test.
 */
export function cleanupsAfterEach(options: { ignoreErrors?: boolean } = {}): (() => unknown)[] {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      if (options.ignoreErrors)
        await Promise.resolve()
          .then(cleanup)
          .catch(() => {});
      else await cleanup();
    }
  });
  return cleanups;
}
