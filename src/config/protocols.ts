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
import { partitionKeyFor } from "../domain/directives.ts";
import type { FieldViolation } from "../domain/errors.ts";
import { ancestorsOf, predecessorsOf } from "../domain/graph.ts";
import { FIRST_CHILDREN } from "../domain/map-step.ts";
import type { JsonObject, PartitionKeyRule, Protocol, ProtocolStep, StepCondition } from "../domain/model.ts";
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

const STEP_NAME = "^[a-z][a-z0-9_-]{0,63}$";

/** `{ pointer, equals | in | exists }`: exactly one test. */
const Condition = Type.Union([
  Type.Object({ pointer: Type.String(), equals: Type.Unknown() }, { additionalProperties: false }),
  Type.Object({ pointer: Type.String(), in: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 100 }) }, { additionalProperties: false }),
  Type.Object({ pointer: Type.String(), exists: Type.Boolean() }, { additionalProperties: false }),
]);

const stepSettings = {
  name: Type.String({ pattern: STEP_NAME }),
  topic: Type.String({ pattern: TOPIC_PATTERN }),
  payloadSchema: Type.Union([Type.String({ minLength: 1 }), Type.Object({}, { additionalProperties: true })]),
  partitionKey: Type.Optional(Type.String({ minLength: 1 })),
  maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  /** Seconds one attempt may run; 0 = no deadline; absent = LUCIUS_STEP_TIMEOUT. */
  timeoutSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_STEP_TIMEOUT_SECONDS })),
  /** Seconds an attempt may go without an event (progress counts); absent = no heartbeat. */
  heartbeatSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_STEP_TIMEOUT_SECONDS })),
};

/** One child per item of the list at `items`, `maxConcurrency` at a time. */
const MapSettings = Type.Object(
  {
    items: Type.String(),
    maxConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    maxItems: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
    toleratedFailurePercent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
  },
  { additionalProperties: false },
);

const StepDefinition = Type.Object(
  {
    ...stepSettings,
    map: Type.Optional(MapSettings),
    /** The steps it waits for, by name; absent: the step before it; []: it starts with the job. */
    after: Type.Optional(Type.Array(Type.String({ pattern: STEP_NAME }), { maxItems: 98 })),
    when: Type.Optional(Condition),
  },
  { additionalProperties: false },
);

/** The compensation step: the usual settings, no place in the graph. */
const CompensationDefinition = Type.Object(stepSettings, { additionalProperties: false });

const ProtocolDefinition = Type.Object(
  {
    requestType: Type.String({ pattern: REQUEST_TYPE_PATTERN }),
    version: Type.Integer({ minimum: 1 }),
    description: Type.Optional(Type.String()),
    // The ledger backend creates a job (1 row), its steps and first directive (1 row) in one
    // transaction of at most 100 operations.
    steps: Type.Array(StepDefinition, { minItems: 1, maxItems: 98 }),
    onFailure: Type.Optional(CompensationDefinition),
  },
  { additionalProperties: false },
);

const ProtocolFile = Type.Object(
  { $schema: Type.Optional(Type.String()), protocols: Type.Array(ProtocolDefinition, { minItems: 1 }) },
  { additionalProperties: false },
);

type ProtocolFileShape = Static<typeof ProtocolFile>;
type ProtocolDefinitionShape = Static<typeof ProtocolDefinition>;

export interface RegisteredProtocol extends Protocol {
  /** Every violation of every step's schema, de-duplicated, paths under `/payload`. */
  checkPayload(payload: unknown): FieldViolation[];
}

/**
 * What a payload must be for a job of `protocol`: every step's schema, and a partition key where
 * a step takes it from the payload. The intake and a redrive's patched payload check the same.
 */
export function payloadViolations(protocol: RegisteredProtocol, tenantId: string, payload: unknown): FieldViolation[] {
  const violations = protocol.checkPayload(payload);
  // A payload may satisfy its schemas and still lack the value a step partitions by.
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return violations;
  for (const step of protocol.steps) {
    if (step.partitionKey.kind !== "pointer") continue;
    const path = `/payload${step.partitionKey.pointer}`;
    if (partitionKeyFor(step.partitionKey, "", tenantId, payload as JsonObject) === undefined && !violations.some((v) => v.path === path)) {
      violations.push({ path, message: `must be a string or number: it is the partition key of step '${step.name}'` });
    }
  }
  return violations;
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
    const steps: ProtocolStep[] = definition.steps.map((step, s) => {
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
        ...(step.heartbeatSeconds ? { heartbeatSeconds: step.heartbeatSeconds } : {}),
      };
    });
    const problems = checkGraph(definition, steps, at);
    let onFailure: ProtocolStep | undefined;
    if (definition.onFailure) {
      const compensation = definition.onFailure;
      if (names.has(compensation.name)) problems.push(`${at}/onFailure/name: '${compensation.name}' is also the name of a step`);
      onFailure = {
        name: compensation.name,
        topic: compensation.topic,
        partitionKey: parsePartitionKey(compensation.partitionKey, `${at}/onFailure`),
        maxAttempts: compensation.maxAttempts ?? 1,
        timeoutSeconds: compensation.timeoutSeconds ?? options.stepTimeoutSeconds ?? DEFAULT_STEP_TIMEOUT_SECONDS,
        ...(compensation.heartbeatSeconds ? { heartbeatSeconds: compensation.heartbeatSeconds } : {}),
      };
      compileStepSchema(compensation.payloadSchema, `${at}/onFailure`);
    }
    if (problems.length > 0) fail(problems.join("; "));
    protocols.set(definition.requestType, {
      requestType: definition.requestType,
      version: definition.version,
      description: definition.description ?? "",
      steps,
      ...(onFailure ? { onFailure } : {}),
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

/**
 * The graph's rules: names in `after` exist, no cycle, conditions point into the payload or the
 * results of a predecessor, and every change of a job fits one ledger transaction. Sets each
 * step's `after` (as indexes) and `when`; returns every problem found.
 */
function checkGraph(definition: ProtocolDefinitionShape, steps: ProtocolStep[], at: string): string[] {
  const problems: string[] = [];
  const indexOf = new Map(definition.steps.map((step, i) => [step.name, i]));
  definition.steps.forEach((step, i) => {
    if (step.after === undefined) return;
    const after: number[] = [];
    step.after.forEach((name, k) => {
      const index = indexOf.get(name);
      if (index === undefined) problems.push(`${at}/steps/${i}/after/${k}: no step is named '${name}'`);
      else if (index === i) problems.push(`${at}/steps/${i}/after/${k}: step '${name}' cannot wait for itself`);
      else if (!after.includes(index)) after.push(index);
    });
    steps[i]!.after = after;
  });
  const cycle = findCycle(steps);
  if (cycle) problems.push(`${at}/steps: the steps wait for each other in a cycle: ${cycle.map((i) => steps[i]!.name).join(" → ")}`);
  definition.steps.forEach((step, i) => {
    if (!step.when) return;
    const problem = cycle ? null : conditionProblem(step.when.pointer, steps, i);
    if (problem) problems.push(`${at}/steps/${i}/when/pointer: ${problem}`);
    steps[i]!.when = step.when as StepCondition;
  });
  definition.steps.forEach((step, i) => {
    if (!step.map) return;
    const problem = cycle ? null : conditionProblem(step.map.items, steps, i);
    if (problem) problems.push(`${at}/steps/${i}/map/items: ${problem}`);
    steps[i]!.map = {
      items: step.map.items,
      maxConcurrency: step.map.maxConcurrency ?? 10,
      maxItems: step.map.maxItems ?? 1000,
      toleratedFailurePercent: step.map.toleratedFailurePercent ?? 0,
    };
  });
  const graph =
    definition.onFailure !== undefined || definition.steps.some((step) => step.after !== undefined || step.when !== undefined || step.map !== undefined);
  // One change of a graph job may touch every step and a directive for each, and the job row:
  // the ledger writes it in one transaction of at most 100 operations.
  const total = steps.length + (definition.onFailure ? 1 : 0);
  if (graph && 2 * total + 1 > 100)
    problems.push(`${at}/steps: a protocol with after, when or onFailure has at most 49 steps, the compensation step included (it has ${total})`);
  // A change that starts a map also writes its first children, two rows each.
  const mapped = definition.steps.some((step) => step.map !== undefined);
  const maps = definition.steps.filter((step) => step.map !== undefined).length;
  // Maps starting together share the first children of their change, one each at least.
  if (maps > FIRST_CHILDREN) problems.push(`${at}/steps: at most ${FIRST_CHILDREN} map steps in a protocol (it has ${maps})`);
  if (mapped && 2 * total + 1 + 2 * FIRST_CHILDREN > 100)
    problems.push(
      `${at}/steps: a protocol with map has at most ${Math.floor((100 - 1 - 2 * FIRST_CHILDREN) / 2)} steps, the compensation step included (it has ${total})`,
    );
  return problems;
}

/** Why a pointer (a condition's, a map's items) is not allowed, or null: it reads the payload, or the results of a step it waits for. */
function conditionProblem(pointer: string, steps: ProtocolStep[], index: number): string | null {
  if (pointer === "/payload" || pointer.startsWith("/payload/")) return null;
  const match = /^\/results\/([^/]+)(\/.*)?$/.exec(pointer);
  if (!match) return `'${pointer}' must point into /payload or /results/<step>`;
  const name = match[1]!.replaceAll("~1", "/").replaceAll("~0", "~");
  const target = steps.findIndex((step) => step.name === name);
  if (target < 0) return `'${pointer}' names no step '${name}'`;
  if (!ancestorsOf({ steps }, index).includes(target))
    return `'${pointer}' reads the results of '${name}', which step '${steps[index]!.name}' does not wait for`;
  return null;
}

/** A cycle of `after` (step indexes, the first repeated at the end), or null. */
function findCycle(steps: ProtocolStep[]): number[] | null {
  const state = new Map<number, "open" | "done">();
  const path: number[] = [];
  const visit = (i: number): number[] | null => {
    if (state.get(i) === "done") return null;
    if (state.get(i) === "open") return [...path.slice(path.indexOf(i)), i];
    state.set(i, "open");
    path.push(i);
    for (const p of predecessorsOf({ steps }, i)) {
      const cycle = visit(p);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(i, "done");
    return null;
  };
  for (let i = 0; i < steps.length; i++) {
    const cycle = visit(i);
    if (cycle) return cycle.reverse();
  }
  return null;
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
  if (protocolsFile !== null) return loadProtocolFile(protocolsFile, stepTimeoutSeconds);
  return bundledRegistry({ stepTimeoutSeconds });
}
