/**
 * The libraries and the service stay apart: nothing under packages/ imports the service's src/
 * (or the repository's dev tools), and src/ imports no library.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" || entry.name === "dist" ? [] : sourceFiles(path);
    return /\.(ts|js|mjs)$/.test(entry.name) ? [path] : [];
  });
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["']([^"']+)["']/g)].map((m) => m[1]!);
}

describe("library boundaries", () => {
  test("packages/ import nothing from src/ or dev/", () => {
    const crossing = sourceFiles(join(root, "packages")).flatMap((file) =>
      importsOf(file)
        .filter((specifier) => specifier.startsWith("."))
        .map((specifier) => relative(root, resolve(file, "..", specifier)))
        .filter((target) => !target.startsWith("packages/"))
        .map((target) => `${relative(root, file)} → ${target}`),
    );
    expect(crossing).toEqual([]);
  });

  test("src/ imports no library package", () => {
    const using = sourceFiles(join(root, "src")).flatMap((file) =>
      importsOf(file)
        .filter((specifier) => specifier.startsWith("@lucius/") || specifier.includes("packages/"))
        .map((specifier) => `${relative(root, file)} → ${specifier}`),
    );
    expect(using).toEqual([]);
  });

  test("the libraries carry the service's version", () => {
    const version = (path: string) => (JSON.parse(readFileSync(join(root, path), "utf8")) as { version: string }).version;
    expect([version("packages/worker/package.json"), version("packages/client/package.json")]).toEqual([version("package.json"), version("package.json")]);
  });

  test("the checker sees imports: the worker library's entry imports its own modules", () => {
    expect(importsOf(join(root, "packages/worker/src/index.ts"))).toContain("./worker.ts");
  });
});
