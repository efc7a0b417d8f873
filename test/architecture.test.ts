/**
 * The module map in docs/ARCHITECTURE.md is the imports between the top-level parts of src/
 * (each folder, each file at its root): every import is drawn, every arrow is an import, and the
 * parts form no cycle, so that imports keep pointing one way.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const SRC = join(ROOT, "src");

/** The part of src/ a file belongs to: "commands/" for src/commands/service.ts, "app.ts" for src/app.ts. */
function partOf(file: string): string | null {
  const path = relative(SRC, file);
  if (path.startsWith("..")) return null;
  const [first, ...rest] = path.split(sep);
  return rest.length > 0 ? `${first}/` : (first ?? null);
}

const IMPORT = /(?:^|[\s;])(?:import|export)\b[^"';]*?(?:from\s*)?["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/gm;

/** "from → to" for every relative import that crosses from one part of src/ into another. */
function importsBetweenParts(): Set<string> {
  const arrows = new Set<string>();
  for (const entry of readdirSync(SRC, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
    const file = join(entry.parentPath, entry.name);
    const from = partOf(file);
    for (const match of readFileSync(file, "utf8").matchAll(IMPORT)) {
      const to = partOf(resolve(dirname(file), (match[1] ?? match[2])!));
      if (from && to && from !== to) arrows.add(`${from} → ${to}`);
    }
  }
  return arrows;
}

/**
 * The arrows of the map: the mermaid block after "## Modules", whose nodes are declared as
 * `id["part (what it holds)"]` and whose edges are `id --> id & id …`.
 */
function drawnArrows(markdown: string): { arrows: Set<string>; parts: Map<string, string> } {
  const section = markdown.slice(markdown.indexOf("## Modules"));
  const block = /```mermaid\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error("docs/ARCHITECTURE.md has no mermaid block under '## Modules'");
  const parts = new Map<string, string>();
  for (const [, id, label] of block.matchAll(/(\w+)\["([^"]+)"\]/g)) parts.set(id!, label!.split(" ")[0]!);
  const arrows = new Set<string>();
  for (const line of block.split("\n")) {
    const edge = /^\s*(\w+)(?:\["[^"]*"\])?\s*-->\s*(.+)$/.exec(line);
    if (!edge) continue;
    for (const target of edge[2]!.split("&")) {
      const to = /^\s*(\w+)/.exec(target)?.[1];
      arrows.add(`${parts.get(edge[1]!) ?? edge[1]} → ${parts.get(to!) ?? to}`);
    }
  }
  return { arrows, parts };
}

function cycleIn(arrows: Set<string>): string[] | null {
  const next = new Map<string, string[]>();
  for (const arrow of arrows) {
    const [from, to] = arrow.split(" → ") as [string, string];
    next.set(from, [...(next.get(from) ?? []), to]);
  }
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (part: string): string[] | null => {
    if (state.get(part) === "done") return null;
    if (state.get(part) === "open") return [...path.slice(path.indexOf(part)), part];
    state.set(part, "open");
    path.push(part);
    for (const to of next.get(part) ?? []) {
      const cycle = visit(to);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(part, "done");
    return null;
  };
  for (const part of next.keys()) {
    const cycle = visit(part);
    if (cycle) return cycle;
  }
  return null;
}

describe("module map", () => {
  const real = importsBetweenParts();
  const { arrows: drawn, parts } = drawnArrows(readFileSync(join(ROOT, "docs/ARCHITECTURE.md"), "utf8"));

  test("every import between parts of src/ is drawn in docs/ARCHITECTURE.md", () => {
    expect([...real].filter((arrow) => !drawn.has(arrow)).sort()).toEqual([]);
  });

  test("every arrow drawn is an import that exists", () => {
    expect([...drawn].filter((arrow) => !real.has(arrow)).sort()).toEqual([]);
  });

  test("every part of src/ is a node of the map", () => {
    const existing = readdirSync(SRC, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() || entry.name.endsWith(".ts"))
      .map((entry) => (entry.isDirectory() ? `${entry.name}/` : entry.name));
    expect(existing.filter((part) => ![...parts.values()].includes(part)).sort()).toEqual([]);
  });

  test("imports point one way: the parts form no cycle", () => {
    expect(cycleIn(real)).toBeNull();
  });

  test("the checker itself: `a --> b & c` reads as two arrows, and a cycle is named", () => {
    const { arrows } = drawnArrows('## Modules\n```mermaid\nflowchart TD\n  a["app.ts"] --> h["http/"] & d["domain/"]\n```\n');
    expect([...arrows].sort()).toEqual(["app.ts → domain/", "app.ts → http/"]);
    expect(cycleIn(new Set(["a/ → b/", "b/ → c/", "c/ → a/"]))).toEqual(["a/", "b/", "c/", "a/"]);
  });
});
