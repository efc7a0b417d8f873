/** Paging cursors are opaque to clients: base64url of the last key they saw. */
import { Buffer } from "node:buffer";
import { InvalidCursorError } from "../domain/errors.ts";

export function encodeCursor(key: string): string {
  return Buffer.from(key, "utf8").toString("base64url");
}

/** The key a cursor carries; a cursor this service did not issue is refused. */
export function readCursor(cursor: string): string {
  const key = Buffer.from(cursor, "base64url").toString("utf8");
  if (encodeCursor(key) !== cursor) throw new InvalidCursorError("the cursor is not one this service issued");
  return key;
}
