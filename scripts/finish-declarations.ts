/**
 * After `tsc` wrote a library's dist/*.d.ts: relative imports written `./x.ts` in the sources (as
 * the repository writes them) become `./x.js`, so that the declarations resolve under every
 * `moduleResolution` a consumer may use (TypeScript rewrites them in JavaScript, not in
 * declarations). The packages' `build` scripts run it.
 *
 *   bun scripts/finish-declarations.ts packages/worker/dist
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const dist = resolve(process.argv[2] ?? "dist");
for (const name of readdirSync(dist).filter((n) => n.endsWith(".d.ts"))) {
  const path = join(dist, name);
  const text = readFileSync(path, "utf8");
  const rewritten = text.replace(/(from\s+|import\()(["'])(\.{1,2}\/[^"']+)\.ts\2/g, "$1$2$3.js$2");
  if (rewritten !== text) writeFileSync(path, rewritten);
}
