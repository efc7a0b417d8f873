/**
 * The one place where errors become responses: RFC 9457 problem+json, never a stack trace, never
 * a backend's raw error text.
 */
import { DomainError, type FieldViolation } from "../domain/errors.ts";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
const TYPE_PREFIX = "urn:lucius:problem:";

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: FieldViolation[];
  /** RFC 9457 extension members, e.g. the checks of /readyz. */
  [extension: string]: unknown;
}

/** The code of a problem answer (the end of its type), read back from a copy of its body. */
export async function problemCodeOf(response: Response): Promise<string | undefined> {
  if (!response.headers.get("content-type")?.startsWith(PROBLEM_CONTENT_TYPE)) return undefined;
  try {
    const { type } = (await response.clone().json()) as { type?: string };
    return type?.slice(type.lastIndexOf(":") + 1);
  } catch {
    return undefined;
  }
}

export function problemResponse(problem: Problem, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(problem), {
    status: problem.status,
    headers: { "content-type": PROBLEM_CONTENT_TYPE, ...headers },
  });
}

export function domainProblem(error: DomainError, instance: string): Response {
  const headers: Record<string, string> = {};
  if (error.retryAfterSeconds !== undefined) headers["retry-after"] = String(error.retryAfterSeconds);
  return problemResponse(
    {
      type: TYPE_PREFIX + error.code,
      title: error.title,
      status: error.status,
      detail: error.message,
      instance,
      ...(error.errors ? { errors: error.errors } : {}),
    },
    headers,
  );
}

export function problemOf(code: string, status: number, title: string, detail: string, instance: string, errors?: FieldViolation[]): Response {
  return problemResponse({ type: TYPE_PREFIX + code, title, status, detail, instance, ...(errors ? { errors } : {}) });
}
