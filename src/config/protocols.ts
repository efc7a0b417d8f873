/**
 * The protocol registry (docs/ARCHITECTURE.md, "Adding a protocol"): which steps a requestType runs, and the payload checks
 * compiled once at start. A broken file stops the start with the file and the problem named.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import embedSchema from "../../schemas/payloads/embed.schema.json" with { type: "json" };
import enrichSchema from "../../schemas/payloads/enrich.schema.json" with { type: "json" };
import ocrSchema from "../../schemas/payloads/ocr.schema.json" with { type: "json" };
import bundledDocument from "../../schemas/protocols.json" with { type: "json" };
import type { FieldViolation } from "../domain/errors.ts";
import type { PartitionKeyRule, Protocol } from "../domain/model.ts";
import { REQUEST_TYPE_PATTERN } from "../validation/envelope.ts";
import { createSchemaCompiler, type PayloadCheck } from "../validation/payloads.ts";
import { DEFAULT_STEP_TIMEOUT_SECONDS, MAX_STEP_TIMEOUT_SECONDS } from "./protocol-limits.ts";

/** The bundled payload schemas by the path the bundled protocols.json gives them, so the binary needs no files. */
const bundledSchemas: Record<string, unknown> = {
  "payloads/ocr.schema.json": ocrSchema,
  "payloads/embed.schema.json": embedSchema,
  "payloads/enrich.schema.json": enrichSchema,
};

/** Service Bus entity names: letters, digits, `.-_/`, at most 260 characters. */
const TOPIC_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,259}$";

const StepDefinition = Type.Object(
  {
    name: Type.String({ pattern: "^[a-z][a-z0-9_-]{0,63}$" }),
    topic: Type.String({ pattern: TOPIC_PATTERN }),
    payloadSchema: Type.Union([Type.String({ minLength: 1 }), Type.Object({}, { additionalProperties: true })]),
    partitionKey: Type.Optional(Type.String({ minLength: 1 })),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    /** Seconds one attempt may run; 0 = no deadline; absent = LUCIUS_STEP_TIMEOUT. */
    timeoutSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_STEP_TIMEOUT_SECONDS })),
  },
  { additionalProperties: false },
);

const ProtocolDefinition = Type.Object(
  {
    requestType: Type.String({ pattern: REQUEST_TYPE_PATTERN }),
    version: Type.Integer({ minimum: 1 }),
    description: Type.Optional(Type.String()),
    // The ledger backend creates a job (1 row), its steps and first directive (1 row) in one
    // transaction of at most 100 operations.
    steps: Type.Array(StepDefinition, { minItems: 1, maxItems: 98 }),
  },
  { additionalProperties: false },
);

const ProtocolFile = Type.Object(
  { $schema: Type.Optional(Type.String()), protocols: Type.Array(ProtocolDefinition, { minItems: 1 }) },
  { additionalProperties: false },
);

type ProtocolFileShape = Static<typeof ProtocolFile>;

export interface RegisteredProtocol extends Protocol {
  /** Every violation of every step's schema, de-duplicated, paths under `/payload`. */
  checkPayload(payload: unknown): FieldViolation[];
}

export interface ProtocolRegistry {
  /** Where the protocols came from: a file path, or "bundled". */
  readonly source: string;
  get(requestType: string): RegisteredProtocol | undefined;
  list(): RegisteredProtocol[];
}

export class ProtocolFileError extends Error {
  constructor(source: string, problem: string) {
    super(`protocol file ${source}: ${problem}`);
    this.name = "ProtocolFileError";
  }
}

export interface BuildRegistryOptions {
  source: string;
  /** Check every payload schema against the JSON Schema meta-schema (default true). */
  validateSchemas?: boolean;
  /** The deadline of a step that names none (LUCIUS_STEP_TIMEOUT); 0 = none. */
  stepTimeoutSeconds?: number;
  /** Returns the JSON Schema at a path relative to the protocol file. Throws when there is none. */
  readSchema(relativePath: string): unknown;
}

export function buildRegistry(document: unknown, options: BuildRegistryOptions): ProtocolRegistry {
  const fail = (problem: string): never => {
    throw new ProtocolFileError(options.source, problem);
  };
  if (!Value.Check(ProtocolFile, document)) {
    const problems = [...Value.Errors(ProtocolFile, document)].slice(0, 10).map((e) => `${e.path || "/"}: ${e.message}`);
    fail(`does not match the protocol file format: ${problems.join("; ")}`);
  }
  const file = document as ProtocolFileShape;
  const compiler = createSchemaCompiler({ validateSchemas: options.validateSchemas ?? true });
  const checksByPath = new Map<string, PayloadCheck>();
  const protocols = new Map<string, RegisteredProtocol>();

  file.protocols.forEach((definition, p) => {
    const at = `/protocols/${p}`;
    if (protocols.has(definition.requestType)) fail(`${at}: duplicate requestType '${definition.requestType}'`);
    const names = new Set<string>();
    const checks: PayloadCheck[] = [];
    const steps = definition.steps.map((step, s) => {
      const stepAt = `${at}/steps/${s}`;
      if (names.has(step.name)) fail(`${stepAt}: duplicate step name '${step.name}' in '${definition.requestType}'`);
      names.add(step.name);
      checks.push(compileStepSchema(step.payloadSchema, stepAt));
      return {
        name: step.name,
        topic: step.topic,
        partitionKey: parsePartitionKey(step.partitionKey, stepAt),
        maxAttempts: step.maxAttempts ?? 1,
        timeoutSeconds: step.timeoutSeconds ?? options.stepTimeoutSeconds ?? DEFAULT_STEP_TIMEOUT_SECONDS,
      };
    });
    protocols.set(definition.requestType, {
      requestType: definition.requestType,
      version: definition.version,
      description: definition.description ?? "",
      steps,
      checkPayload: (payload) => dedupe(checks.flatMap((check) => check(payload))),
    });
  });

  function compileStepSchema(schema: string | object, at: string): PayloadCheck {
    const key = typeof schema === "string" ? schema : undefined;
    const cached = key && checksByPath.get(key);
    if (cached) return cached;
    let resolved: unknown = schema;
    if (typeof schema === "string") {
      try {
        resolved = options.readSchema(schema);
      } catch (error) {
        fail(`${at}/payloadSchema: cannot read '${schema}': ${(error as Error).message}`);
      }
    }
    try {
      const check = compiler.compile(resolved, "/payload");
      if (key) checksByPath.set(key, check);
      return check;
    } catch (error) {
      return fail(`${at}/payloadSchema: invalid JSON Schema${key ? ` '${key}'` : ""}: ${(error as Error).message}`);
    }
  }

  function parsePartitionKey(rule: string | undefined, at: string): PartitionKeyRule {
    if (rule === undefined || rule === "jobId") return { kind: "jobId" };
    if (rule === "tenantId") return { kind: "tenantId" };
    if (rule.startsWith("/")) return { kind: "pointer", pointer: rule };
    return fail(`${at}/partitionKey: '${rule}' is not "jobId", "tenantId" or a JSON pointer into the payload`);
  }

  return {
    source: options.source,
    get: (requestType) => protocols.get(requestType),
    list: () => [...protocols.values()],
  };
}

function dedupe(violations: FieldViolation[]): FieldViolation[] {
  const seen = new Set<string>();
  return violations.filter((v) => {
    const key = `${v.path}\u0000${v.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** `validateSchemas`: the test suite turns it on; the start skips it (see SchemaCompilerOptions). */
export function bundledRegistry(options: { validateSchemas?: boolean; stepTimeoutSeconds?: number } = {}): ProtocolRegistry {
  return buildRegistry(bundledDocument, {
    source: "bundled schemas/protocols.json",
    validateSchemas: options.validateSchemas ?? false,
    ...(options.stepTimeoutSeconds === undefined ? {} : { stepTimeoutSeconds: options.stepTimeoutSeconds }),
    readSchema(relativePath) {
      const schema = bundledSchemas[relativePath];
      if (schema === undefined) throw new Error("not bundled");
      return schema;
    },
  });
}

export function loadProtocolFile(path: string, stepTimeoutSeconds = DEFAULT_STEP_TIMEOUT_SECONDS): ProtocolRegistry {
  const source = resolve(path);
  const readJson = (file: string): unknown => JSON.parse(readFileSync(file, "utf8"));
  let document: unknown;
  try {
    document = readJson(source);
  } catch (error) {
    throw new ProtocolFileError(source, (error as Error).message);
  }
  return buildRegistry(document, { source, stepTimeoutSeconds, readSchema: (relative) => readJson(resolve(dirname(source), relative)) });
}

/** The protocols the settings name (a file, or the bundled ones), steps without a timeout getting the configured one. */
export function loadProtocols(settings: { protocolsFile: string | null; stepTimeoutSeconds: number }): ProtocolRegistry {
  const { protocolsFile, stepTimeoutSeconds } = settings;
  return protocolsFile === null ? bundledRegistry({ stepTimeoutSeconds }) : loadProtocolFile(protocolsFile, stepTimeoutSeconds);
}
