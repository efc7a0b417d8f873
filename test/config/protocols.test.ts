import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundledRegistry, loadProtocolFile, loadProtocols, ProtocolFileError } from "../../src/config/protocols.ts";

const dir = mkdtempSync(join(tmpdir(), "lucius-protocols-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeProtocols(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

const step = { name: "ocr", topic: "ocr-requests", payloadSchema: { type: "object" } };

describe("the bundled protocols", () => {
  // The start skips the meta-schema check for these; here it runs.
  const registry = bundledRegistry({ validateSchemas: true });
  test("ship document.pages: split, ocr mapped over the pages (8 at once) beside classify, merge, cleanup on failure", () => {
    const pages = registry.get("document.pages")!;
    expect(pages.steps.map((s) => [s.name, s.after, s.map?.maxConcurrency])).toEqual([
      ["split", [], undefined],
      ["ocr", [0], 8],
      ["classify", [0], undefined],
      ["merge", [1, 2], undefined],
    ]);
    expect(pages.onFailure?.name).toBe("cleanup");
    expect(
      loadProtocols({ protocolsFile: null, stepTimeoutSeconds: 0 })
        .list()
        .map((p) => p.requestType),
    ).toEqual(["document.ocr", "document.ingest", "document.pages"]);
  });
  test("ship document.ocr (one step) and document.ingest (three steps in order)", () => {
    expect(registry.get("document.ocr")?.steps.map((s) => s.name)).toEqual(["ocr"]);
    expect(registry.get("document.ingest")?.steps.map((s) => [s.name, s.topic, s.partitionKey])).toEqual([
      ["ocr", "ocr-requests", { kind: "jobId" }],
      ["embed", "vector-ingestion", { kind: "tenantId" }],
      ["enrich", "semantic-intelligence", { kind: "pointer", pointer: "/documentId" }],
    ]);
  });
  test("are valid JSON Schemas (checked against the 2020-12 meta-schema)", () => {
    expect(() => bundledRegistry({ validateSchemas: true })).not.toThrow();
  });

  test("accept a realistic payload and refuse the wrong content type and a relative URI", () => {
    const ocr = registry.get("document.ocr")!;
    expect(ocr.checkPayload({ documentId: "d1", documentUri: "https://x/y.pdf", contentType: "image/tiff", language: "de-CH" })).toEqual([]);
    expect(
      ocr
        .checkPayload({ documentId: "d1", documentUri: "y.pdf", contentType: "text/html" })
        .map((v) => v.path)
        .sort(),
    ).toEqual(["/payload/contentType", "/payload/documentUri"]);
  });
});

describe("a protocol file", () => {
  test("resolves payload schema paths relative to the file and compiles them", () => {
    writeProtocols("custom.schema.json", { type: "object", required: ["x"] });
    const registry = loadProtocolFile(
      writeProtocols("ok.json", { protocols: [{ requestType: "custom.run", version: 3, steps: [{ ...step, payloadSchema: "custom.schema.json" }] }] }),
    );
    expect(registry.get("custom.run")?.version).toBe(3);
    expect(registry.get("custom.run")?.checkPayload({})).toEqual([{ path: "/payload/x", message: "must have required property 'x'" }]);
  });

  test.each([
    ["bad JSON", "{ not json", /custom|JSON|Unexpected|Parse/i],
    [
      "a missing schema file",
      { protocols: [{ requestType: "a.b", version: 1, steps: [{ ...step, payloadSchema: "missing.json" }] }] },
      /steps\/0\/payloadSchema: cannot read 'missing.json'/,
    ],
    [
      "an invalid schema",
      { protocols: [{ requestType: "a.b", version: 1, steps: [{ ...step, payloadSchema: { type: "objekt" } }] }] },
      /steps\/0\/payloadSchema: invalid JSON Schema/,
    ],
    [
      "a duplicate requestType",
      {
        protocols: [
          { requestType: "a.b", version: 1, steps: [step] },
          { requestType: "a.b", version: 2, steps: [step] },
        ],
      },
      /\/protocols\/1: duplicate requestType 'a.b'/,
    ],
    [
      "a bad partition key rule",
      { protocols: [{ requestType: "a.b", version: 1, steps: [{ ...step, partitionKey: "documentId" }] }] },
      /partitionKey: 'documentId'/,
    ],
    ["a protocol without steps", { protocols: [{ requestType: "a.b", version: 1, steps: [] }] }, /protocols\/0\/steps/],
    ["an unknown field", { protocols: [{ requestType: "a.b", version: 1, steps: [step], retries: 3 }] }, /protocols\/0/],
    ["a negative timeout", { protocols: [{ requestType: "a.b", version: 1, steps: [{ ...step, timeoutSeconds: -1 }] }] }, /steps\/0\/timeoutSeconds/],
  ])("with %s stops the start naming the file and the problem", (name, content, reason) => {
    const path = writeProtocols(`${name.replaceAll(" ", "-")}.json`, content);
    let error: unknown;
    try {
      loadProtocolFile(path);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ProtocolFileError);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toMatch(reason);
  });

  test("a step's timeoutSeconds is its deadline; a step without one gets LUCIUS_STEP_TIMEOUT's", () => {
    const file = writeProtocols("timeouts.json", {
      protocols: [
        {
          requestType: "a.b",
          version: 1,
          steps: [
            { ...step, name: "fast", timeoutSeconds: 30 },
            { ...step, name: "slow" },
            { ...step, name: "free", timeoutSeconds: 0 },
          ],
        },
      ],
    });
    expect(
      loadProtocolFile(file, 900)
        .get("a.b")!
        .steps.map((s) => s.timeoutSeconds),
    ).toEqual([30, 900, 0]);
    expect(bundledRegistry({ stepTimeoutSeconds: 120 }).get("document.ocr")!.steps[0]!.timeoutSeconds).toBe(120);
  });

  test("that does not exist stops the start naming it", () => {
    expect(() => loadProtocolFile(join(dir, "nope.json"))).toThrow(/nope\.json/);
  });
});

describe("a protocol graph", () => {
  const s = (name: string, extra: Record<string, unknown> = {}) => ({ name, topic: `${name}-requests`, payloadSchema: { type: "object" }, ...extra });
  const file = (steps: unknown[], extra: Record<string, unknown> = {}) => ({ protocols: [{ requestType: "graph.test", version: 1, steps, ...extra }] });
  const refusal = (name: string, content: unknown): string => {
    try {
      loadProtocolFile(writeProtocols(name, content));
    } catch (error) {
      expect(error).toBeInstanceOf(ProtocolFileError);
      return (error as Error).message;
    }
    throw new Error("the protocol file was accepted");
  };

  test("after, when and onFailure are read: after by index, conditions as written, the compensation step apart", () => {
    const registry = loadProtocolFile(
      writeProtocols(
        "graph.json",
        file(
          [
            s("split", { after: [] }),
            s("classify", { after: ["split"] }),
            s("embed", { after: ["split"], when: { pointer: "/results/split/kind", in: ["pdf", "tiff"] } }),
            s("merge", { after: ["classify", "embed"] }),
          ],
          { onFailure: s("cleanup") },
        ),
      ),
    );
    const protocol = registry.get("graph.test")!;
    expect(protocol.steps.map((step) => [step.name, step.after])).toEqual([
      ["split", []],
      ["classify", [0]],
      ["embed", [0]],
      ["merge", [1, 2]],
    ]);
    expect(protocol.steps[2]!.when).toEqual({ pointer: "/results/split/kind", in: ["pdf", "tiff"] });
    expect(protocol.onFailure?.name).toBe("cleanup");
  });

  test("an unknown name in after, and a step that waits for itself, are named", () => {
    const message = refusal("unknown.json", file([s("a"), s("b", { after: ["nope", "b"] })]));
    expect(message).toContain("/protocols/0/steps/1/after/0: no step is named 'nope'");
    expect(message).toContain("/protocols/0/steps/1/after/1: step 'b' cannot wait for itself");
  });

  test("a cycle is refused naming its steps", () => {
    expect(refusal("cycle.json", file([s("a", { after: ["c"] }), s("b", { after: ["a"] }), s("c", { after: ["b"] })]))).toContain(
      "the steps wait for each other in a cycle: a → b → c → a",
    );
  });

  test("a condition that reads a step not waited for, or outside payload and results, is refused", () => {
    const message = refusal(
      "when.json",
      file([
        s("a", { after: [] }),
        s("b", { after: [] }),
        s("c", { after: ["a"], when: { pointer: "/results/b/x", equals: 1 } }),
        s("d", { when: { pointer: "/job/x", exists: true } }),
      ]),
    );
    expect(message).toContain("/protocols/0/steps/2/when/pointer: '/results/b/x' reads the results of 'b', which step 'c' does not wait for");
    expect(message).toContain("/protocols/0/steps/3/when/pointer: '/job/x' must point into /payload or /results/<step>");
  });

  test("a condition that does not parse is refused", () => {
    expect(refusal("when-shape.json", file([s("a", { when: { pointer: "/payload/x", equals: 1, exists: true } })]))).toContain("/protocols/0/steps/0/when");
  });

  test("an onFailure named like a step, and a graph of more than 49 steps, are refused", () => {
    expect(refusal("clash.json", file([s("a")], { onFailure: s("a") }))).toContain("/protocols/0/onFailure/name: 'a' is also the name of a step");
    const many = Array.from({ length: 49 }, (_, i) => s(`s${i}`));
    expect(refusal("many.json", file(many, { onFailure: s("cleanup") }))).toContain("at most 49 steps, the compensation step included (it has 50)");
  });

  test("a map that does not parse, with numbers out of range, or over a list no predecessor makes, is refused", () => {
    expect(refusal("map-range.json", file([s("a", { map: { items: "/payload/list", maxConcurrency: 0 } })]))).toContain(
      "/protocols/0/steps/0/map/maxConcurrency",
    );
    expect(refusal("map-shape.json", file([s("a", { map: { list: "/payload/list" } })]))).toContain("/protocols/0/steps/0/map");
    expect(
      refusal("map-items.json", file([s("a", { after: [] }), s("b", { after: [] }), s("c", { after: ["a"], map: { items: "/results/b/pages" } })])),
    ).toContain("/protocols/0/steps/2/map/items: '/results/b/pages' reads the results of 'b', which step 'c' does not wait for");
    const many = Array.from({ length: 30 }, (_, i) => s(`s${i}`, i === 1 ? { map: { items: "/results/s0/pages" } } : {}));
    expect(refusal("map-many.json", file(many))).toContain("a protocol with map has at most 29 steps");
  });

  test("a file without the new keys keeps its meaning: each step waits for the one before", () => {
    const protocol = loadProtocolFile(writeProtocols("line.json", file([s("a"), s("b"), s("c")]))).get("graph.test")!;
    expect(protocol.steps.map((step) => step.after)).toEqual([undefined, undefined, undefined]);
    expect(protocol.onFailure).toBeUndefined();
  });
});
