/**
 * Reads a JSON body up to a byte limit, so an oversized body gets a problem+json 413 (Bun's own
 * limit, set higher as a backstop, answers with an empty body) and bad JSON gets a 400.
 */
import { MalformedJsonError, PayloadTooLargeError } from "../domain/errors.ts";

export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () => new PayloadTooLargeError(`the request body exceeds ${maxBytes} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge();
  const text = declared !== null ? await request.text() : await readLimited(request, maxBytes, tooLarge);
  if (text.length > maxBytes && new TextEncoder().encode(text).byteLength > maxBytes) throw tooLarge();
  if (text.trim() === "") throw new MalformedJsonError("the request body is empty; a JSON object is expected");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new MalformedJsonError(`the request body is not valid JSON: ${(error as Error).message}`);
  }
}

/** A body without Content-Length (chunked): count bytes as they arrive and stop at the limit. */
async function readLimited(request: Request, maxBytes: number, tooLarge: () => Error): Promise<string> {
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
