/**
 * @lucius/client as it is shipped: built to ESM with declarations, loaded by Node (not Bun),
 * its declarations usable by a strict TypeScript consumer, nothing in it from the service's
 * src/ or from Node, and its version the service's.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");
const PACKAGE = join(ROOT, "packages/client");
const DIST = join(PACKAGE, "dist");

async function run(command: string[], cwd: string) {
  const proc = Bun.spawn(command, { cwd, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

describe("@lucius/client build", () => {
  beforeAll(async () => {
    const build = await run(["bun", "run", "build"], PACKAGE);
    if (build.code !== 0) throw new Error(`bun run build failed:\n${build.stdout}\n${build.stderr}`);
  }, 20_000);

  test("bun run build writes dist/index.js (ESM) and dist/index.d.ts; the package's exports point at them", () => {
    expect(existsSync(join(DIST, "index.js"))).toBe(true);
    expect(existsSync(join(DIST, "index.d.ts"))).toBe(true);
    const manifest = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8"));
    expect(manifest.type).toBe("module");
    expect(manifest.exports["."]).toMatchObject({ types: "./dist/index.d.ts", import: "./dist/index.js" });
    const js = readFileSync(join(DIST, "index.js"), "utf8");
    expect(js).toContain("export {");
    expect(js).not.toMatch(/\brequire\(|from\s*["']node:|\bBun\.|\bprocess\.|\bBuffer\b/);
    for (const name of readdirSync(DIST).filter((n) => n.endsWith(".d.ts"))) {
      expect(readFileSync(join(DIST, name), "utf8")).not.toMatch(/from\s*["']\.{1,2}\/[^"']+\.ts["']/);
    }
  });

  test("Node loads dist/index.js and the client works there: a problem answer becomes a LuciusProblem", async () => {
    const script = `
      const m = await import(${JSON.stringify(join(DIST, "index.js"))});
      const problem = { type: "urn:lucius:problem:not-found", title: "Not found", status: 404, detail: "job j1 does not exist" };
      const client = m.createClient({
        baseUrl: "http://lucius.invalid",
        fetch: async () => new Response(JSON.stringify(problem), { status: 404, headers: { "content-type": "application/problem+json" } }),
      });
      const error = await client.get("j1").catch((e) => e);
      console.log(JSON.stringify({
        exports: Object.keys(m).sort(),
        problem: error instanceof m.LuciusProblem && { status: error.status, code: error.code, errors: error.errors },
      }));`;
    const node = await run(["node", "--input-type=module", "-e", script], ROOT);
    expect(node.stderr).toBe("");
    expect(node.code).toBe(0);
    const out = JSON.parse(node.stdout);
    expect(out.exports).toEqual(expect.arrayContaining(["createClient", "LuciusProblem", "LuciusTimeoutError", "jobIsOver"]));
    expect(out.problem).toEqual({ status: 404, code: "not-found", errors: [] });
  });

  test("a strict TypeScript consumer (nodenext) type-checks against dist/index.d.ts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lucius-client-consumer-"));
    try {
      writeFileSync(
        join(dir, "consumer.ts"),
        `import { createClient, LuciusProblem, type Job, type Submitted } from ${JSON.stringify(join(DIST, "index.js"))};
const client = createClient({ baseUrl: "https://lucius.example", token: async () => "t" });
export async function run(): Promise<Job> {
  const accepted: Submitted = await client.submit({ requestType: "document.ocr", tenantId: "acme", payload: { documentId: "d1" } });
  try {
    return await client.wait(accepted.jobId, { timeoutMs: 1000 });
  } catch (error) {
    if (error instanceof LuciusProblem) console.log(error.status, error.errors.map((e) => e.path));
    throw error;
  }
}
// @ts-expect-error: status is one of the job statuses
for await (const job of client.list({ tenantId: "acme", status: "done" })) console.log(job.jobId);
`,
      );
      writeFileSync(
        join(dir, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "nodenext",
            moduleResolution: "nodenext",
            lib: ["ES2022", "DOM", "DOM.Iterable"],
            types: [],
            strict: true,
            exactOptionalPropertyTypes: true,
            noEmit: true,
            skipLibCheck: false,
          },
          files: ["consumer.ts"],
        }),
      );
      writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
      const tsc = await run([join(ROOT, "node_modules/.bin/tsc"), "-p", join(dir, "tsconfig.json")], dir);
      expect(tsc.stdout + tsc.stderr).toBe("");
      expect(tsc.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("one version with the service; the sources import nothing but their own files and eventsource-parser, nothing from Node", () => {
    const service = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const manifest = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8"));
    expect(manifest.version).toBe(service.version);
    expect(Object.keys(manifest.dependencies ?? {})).toEqual(["eventsource-parser"]);
    const sources = readdirSync(join(PACKAGE, "src")).filter((n) => n.endsWith(".ts"));
    expect(sources).toContain("index.ts");
    for (const name of sources) {
      const text = readFileSync(join(PACKAGE, "src", name), "utf8");
      const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]!);
      for (const specifier of specifiers) expect([name, specifier]).toEqual([name, expect.stringMatching(/^(\.\/[\w-]+\.ts|eventsource-parser)$/)]);
      expect([name, /\b(process|Buffer|Bun|require)\b\s*[.(]/.test(text)]).toEqual([name, false]);
    }
  });

  test("the service imports nothing from the client", () => {
    const offenders = [...new Bun.Glob("**/*.ts").scanSync(join(ROOT, "src"))].filter((file) =>
      /["'](@lucius\/client|[./]*packages\/client)/.test(readFileSync(join(ROOT, "src", file), "utf8")),
    );
    expect(offenders).toEqual([]);
  });
});
