/**
 * TypeBox's validation errors as field violations: one per path (TypeBox reports a missing
 * property twice), messages that name what is allowed, never the value that was sent.
 */
import type { TSchema } from "@sinclair/typebox";
import { type ValueError, ValueErrorType } from "@sinclair/typebox/errors";
import type { FieldViolation } from "../domain/errors.ts";

/** Enough violations to fix a request; a hostile one does not get a long answer. */
const MAX_VIOLATIONS = 20;

export function violationsOf(errors: Iterable<ValueError>, prefix = ""): FieldViolation[] {
  const byPath = new Map<string, FieldViolation>();
  for (const error of errors) {
    const path = prefix + error.path;
    if (!byPath.has(path)) byPath.set(path, { path, message: messageOf(error) });
    if (byPath.size >= MAX_VIOLATIONS) break;
  }
  return [...byPath.values()];
}

function messageOf(error: ValueError): string {
  switch (error.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return "is required";
    case ValueErrorType.ObjectAdditionalProperties:
      return "is not allowed here";
    case ValueErrorType.Union:
      return unionMessage(error.schema) ?? error.message;
    case ValueErrorType.Literal:
      return `must be ${JSON.stringify(error.schema.const)}`;
    default:
      return error.message;
  }
}

/** "must be one of: a, b, c" when every member of the union is a literal. */
function unionMessage(schema: TSchema): string | null {
  const members = (schema.anyOf ?? []) as TSchema[];
  if (members.length === 0 || !members.every((member) => "const" in member)) return null;
  return `must be one of: ${members.map((member) => String(member.const)).join(", ")}`;
}
