/** The `limit` query parameter of every paged route. */
import { MalformedRequestError } from "../domain/errors.ts";

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;

/** Checked here rather than with t.Integer: Elysia's coerced-number errors lose the field's path. */
export function pageSize(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_PAGE_SIZE;
  const limit = Number(raw);
  if (!/^[0-9]+$/.test(raw) || limit < 1 || limit > MAX_PAGE_SIZE) {
    throw new MalformedRequestError(`limit must be an integer from 1 to ${MAX_PAGE_SIZE}`, {
      errors: [{ path: "/query/limit", message: `must be an integer from 1 to ${MAX_PAGE_SIZE}` }],
    });
  }
  return limit;
}
