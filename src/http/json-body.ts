/**
 * The one way a request body is read, for every route that takes one (an Elysia `parse` hook):
 * media type, then size (before reading when declared, while reading when chunked), then JSON and
 * its limits (depth, numbers, strings), then the route's schema. Each step answers with its own
 * problem, and none of them echoes or pretty-prints what was sent.
 */
import { Buffer } from "node:buffer";
import type { TSchema } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { PayloadTooLargeError, ValidationFailedError } from "../domain/errors.ts";
import { parseJsonText } from "../validation/json-value.ts";
import { violationsOf } from "../validation/violations.ts";
import { HttpProblem } from "./problem.ts";

export interface JsonBodyOptions {
  maxBytes: number;
  /** Checked here, so that Elysia's own check (which would print the body) only ever sees valid bodies. */
  schema?: TSchema;
  /** An empty body is no body (undefined) rather than malformed JSON. */
  optional?: boolean;
}

/** `application/json`, `application/<anything>+json`, with any parameters. */
const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

export function jsonBody(options: JsonBodyOptions): (context: { request: Request }) => Promise<unknown> {
  const check = options.schema ? TypeCompiler.Compile(options.schema) : null;
  return async ({ request }) => {
    const contentType = request.headers.get("content-type");
    if (contentType !== null && !JSON_MEDIA_TYPE.test(contentType)) {
      throw new HttpProblem("unsupported-media-type", 415, "Unsupported media type", "the body must be JSON (Content-Type: application/json)");
    }
    const text = await readText(request, options.maxBytes);
    if (options.optional && text.trim() === "") return undefined;
    const value = parseJsonText(text);
    if (check && !check.Check(value)) {
      const errors = violationsOf(check.Errors(value));
      throw new ValidationFailedError(`${errors.length} violation(s) in the request body`, { errors });
    }
    return value;
  };
}

/** The body as text, refused past `maxBytes`: before reading when declared, as soon as it is passed when chunked. */
async function readText(request: Request, maxBytes: number): Promise<string> {
  const tooLarge = () => new PayloadTooLargeError(`the request body exceeds ${maxBytes} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge();
  if (declared !== null) {
    // Bun holds a declared body to its length: read it whole, the fast way.
    const text = await request.text();
    if (text.length > maxBytes && new TextEncoder().encode(text).byteLength > maxBytes) throw tooLarge();
    return text;
  }
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/** For routes that take no body: one that is declared too large is still refused, anything else is not read. */
export function noBody(maxBytes: number): (context: { request: Request }) => undefined {
  return ({ request }) => {
    const declared = request.headers.get("content-length");
    if (declared !== null && Number(declared) > maxBytes) throw new PayloadTooLargeError(`the request body exceeds ${maxBytes} bytes`);
    return undefined;
  };
}
