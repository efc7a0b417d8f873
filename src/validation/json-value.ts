/**
 * JSON from outside (request bodies, Service Bus events) is parsed here and nowhere else, then
 * checked against limits before anything recursive (schema validation, canonical JSON, freezing,
 * storage encoding) touches it: a nesting depth, finite numbers, well-formed strings. The walk is
 * iterative and stops at the depth limit, so no input can exhaust the stack or cost more than
 * its size.
 */
import { type FieldViolation, MalformedJsonError, ValidationFailedError } from "../domain/errors.ts";
import { escapePointerSegment } from "../domain/json-pointer.ts";

/** Objects and arrays inside each other, the outermost counting as 1. Enough for any document we carry. */
const MAX_JSON_DEPTH = 64;
/** Violations reported at most: enough to fix a request, never a second copy of a hostile one. */
const MAX_VIOLATIONS = 20;

/** Parses JSON text; throws MalformedJsonError for text that is not JSON and ValidationFailedError past a limit. */
export function parseJsonText(text: string): unknown {
  if (text.trim() === "") throw new MalformedJsonError("the body is empty; a JSON object is expected");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new MalformedJsonError(`the body is not valid JSON: ${(error as Error).message}`);
  }
  assertJsonWithinLimits(value);
  return value;
}

/** Throws ValidationFailedError naming every place (up to 20) where `value` breaks a limit. */
export function assertJsonWithinLimits(value: unknown): void {
  const violations = jsonLimitViolations(value);
  if (violations.length > 0) throw new ValidationFailedError(`the JSON breaks ${violations.length === 1 ? "a limit" : "limits"}`, { errors: violations });
}

/** Where a value sits: built into a JSON pointer only when a violation needs it. */
interface Place {
  value: unknown;
  key: string;
  parent: Place | null;
  depth: number;
}

function pointerOf(place: Place): string {
  const segments: string[] = [];
  for (let at: Place | null = place; at?.parent; at = at.parent) segments.push(escapePointerSegment(at.key));
  return segments.length === 0 ? "" : `/${segments.reverse().join("/")}`;
}

function jsonLimitViolations(root: unknown): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const stack: Place[] = [{ value: root, key: "", parent: null, depth: 0 }];
  while (stack.length > 0 && violations.length < MAX_VIOLATIONS) {
    const place = stack.pop()!;
    const { value, depth } = place;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) violations.push({ path: pointerOf(place), message: "must be a finite number (within ±1.7976931348623157e308)" });
    } else if (typeof value === "string") {
      if (!value.isWellFormed()) violations.push({ path: pointerOf(place), message: "must be well-formed Unicode: it holds a lone surrogate" });
    } else if (value !== null && typeof value === "object") {
      if (depth >= MAX_JSON_DEPTH) {
        violations.push({ path: pointerOf(place), message: `nests deeper than ${MAX_JSON_DEPTH} levels of objects and arrays` });
        continue;
      }
      if (Array.isArray(value)) {
        for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], key: String(i), parent: place, depth: depth + 1 });
      } else {
        for (const key in value) {
          if (!key.isWellFormed()) {
            violations.push({ path: pointerOf(place), message: "has a member name that is not well-formed Unicode" });
            continue;
          }
          stack.push({ value: (value as Record<string, unknown>)[key], key, parent: place, depth: depth + 1 });
        }
      }
    }
  }
  return violations;
}
