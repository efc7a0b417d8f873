/**
 * Payload validation against the protocol's JSON Schemas (draft 2020-12) with Ajv: the most
 * used and fastest validator, compiling each schema once into a function, reporting every
 * violation (`allErrors`) with a JSON pointer.
 */
import { Ajv2020, type ErrorObject } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import type { FieldViolation } from "../domain/errors.ts";
import { escapePointerSegment } from "../domain/json-pointer.ts";

// ajv-formats is CommonJS: its default export arrives wrapped under some loaders.
const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;

export type PayloadCheck = (payload: unknown) => FieldViolation[];

export interface SchemaCompilerOptions {
  /**
   * Check each schema against the 2020-12 meta-schema first. Costs ~65 ms at start (Ajv compiles
   * the meta-schema); the bundled schemas skip it, since the test suite checks them.
   */
  validateSchemas: boolean;
}

export function createSchemaCompiler(options: SchemaCompilerOptions = { validateSchemas: true }) {
  const ajv = new Ajv2020({
    validateSchema: options.validateSchemas,
    allErrors: true,
    // Unknown keywords (a typo such as "requried") fail at start; valid but loose schemas pass.
    strictSchema: true,
    strictRequired: false,
    strictTypes: false,
    strictTuples: false,
    allowUnionTypes: true,
  });
  addFormats(ajv);
  return {
    /** Throws with Ajv's reason when `schema` is not a valid JSON Schema. */
    compile(schema: unknown, pathPrefix: string): PayloadCheck {
      if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
        throw new Error("a payload schema must be a JSON object");
      }
      const validate = ajv.compile(schema);
      return (payload) => (validate(payload) ? [] : (validate.errors ?? []).map((e) => toViolation(e, pathPrefix)));
    },
  };
}

/** Points at the offending member itself: a missing `documentId` is reported at `/payload/documentId`. */
function toViolation(error: ErrorObject, prefix: string): FieldViolation {
  let path = prefix + error.instancePath;
  const params = error.params as Record<string, unknown>;
  if (error.keyword === "required" && typeof params.missingProperty === "string") {
    path += `/${escapePointerSegment(params.missingProperty)}`;
  } else if (error.keyword === "additionalProperties" && typeof params.additionalProperty === "string") {
    path += `/${escapePointerSegment(params.additionalProperty)}`;
  }
  let message = error.message ?? `fails ${error.keyword}`;
  if (error.keyword === "enum" && Array.isArray(params.allowedValues)) {
    message += `: ${params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  return { path, message };
}
