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

/** The problem code of each problem answer, for metrics, without reading bodies back. */
const codes = new WeakMap<Response, string>();

export function problemCodeOf(response: Response): string | undefined {
  return codes.get(response);
}

export function problemResponse(problem: Problem, headers: Record<string, string> = {}): Response {
  const response = new Response(JSON.stringify(problem), {
    status: problem.status,
    headers: { "content-type": PROBLEM_CONTENT_TYPE, ...headers },
  });
  codes.set(response, problem.type.slice(problem.type.lastIndexOf(":") + 1));
  return response;
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
