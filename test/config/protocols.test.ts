import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundledRegistry, loadProtocolFile, ProtocolFileError } from "../../src/config/protocols.ts";

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
