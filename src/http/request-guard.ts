/**
 * What must hold before a request reaches the router: a target that is a path, a Host that makes
 * a valid URL, a method the path knows. Bun hands over a bare path as `request.url` when the Host
 * header is unusable, Deno builds a URL around it anyway, and Elysia's router assumes an absolute
 * URL with a host of at least four characters; all of it is settled here, from the request as
 * sent, so that both runtimes answer alike and nothing later parses a URL that can throw.
 */
import { type HttpProblem, httpProblem, HttpProblem as Problem } from "./problem.ts";

type Handler = (request: Request) => Promise<Response>;

/** A Host header as RFC 9110 allows it: a name or an IPv4 or bracketed IPv6 address, and an optional port (which may be empty). */
const HOST = /^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{0,5}))?$/;

function isValidHost(host: string): boolean {
  const match = HOST.exec(host);
  return match !== null && (!match[1] || Number(match[1]) <= 65535);
}

export interface Route {
  method: string;
  path: string;
}

/** The path of a request URL (absolute or a bare path), never throwing; "" when it has none. */
export function pathOf(url: string): string {
  let start = 0;
  if (!url.startsWith("/")) {
    const scheme = url.indexOf("://");
    if (scheme < 0) return "";
    start = url.indexOf("/", scheme + 3);
    if (start < 0) return "/";
  }
  const query = url.indexOf("?", start);
  return url.slice(start, query < 0 ? undefined : query);
}

/** A route's path (`/v1/jobs/:jobId`) as a pattern its requests' paths match. */
function patternOf(path: string): RegExp {
  return new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:[A-Za-z0-9_]+/g, "[^/]+")}/?$`);
}

/**
 * The methods each path takes: static paths in a map (one lookup for most requests), paths with
 * parameters (`/v1/jobs/:jobId`) as patterns.
 */
function compileRoutes(routes: readonly Route[]) {
  const byPath = new Map<string, Set<string>>();
  const patterns: { pattern: RegExp; methods: Set<string> }[] = [];
  for (const route of routes) {
    const method = route.method.toUpperCase();
    const methods = method === "GET" ? [method, "HEAD"] : [method];
    if (!route.path.includes(":")) {
      const allowed = byPath.get(route.path) ?? new Set<string>();
      for (const m of methods) allowed.add(m);
      byPath.set(route.path, allowed);
      continue;
    }
    const pattern = patternOf(route.path);
    const existing = patterns.find((p) => p.pattern.source === pattern.source);
    if (existing) for (const m of methods) existing.methods.add(m);
    else patterns.push({ pattern, methods: new Set(methods) });
  }
  return (path: string): Set<string> | null => {
    const exact = byPath.get(path);
    if (exact) return exact;
    const allowed = new Set<string>();
    for (const { pattern, methods } of patterns) if (pattern.test(path)) for (const m of methods) allowed.add(m);
    return allowed.size > 0 ? allowed : null;
  };
}

/** The route a path takes (`/v1/jobs/:jobId`), as a trace names it; null for none. */
export function routeTemplates(routes: () => readonly Route[]): (path: string) => string | null {
  let exact: Set<string> | null = null;
  let patterns: { pattern: RegExp; path: string }[] = [];
  return (path) => {
    if (exact === null) {
      const known = routes().filter((route) => route.path !== "*");
      exact = new Set(known.filter((route) => !route.path.includes(":")).map((route) => route.path));
      patterns = known.filter((route) => route.path.includes(":")).map((route) => ({ path: route.path, pattern: patternOf(route.path) }));
    }
    // Most requests take a static path (the intake): one lookup.
    if (exact.has(path)) return path;
    return patterns.find((route) => route.pattern.test(path))?.path ?? null;
  };
}

export function guardRequests(handle: Handler, routes: () => readonly Route[]): Handler {
  let methodsOf: ReturnType<typeof compileRoutes> | null = null;

  /** Null when the method may go on (or the path is unknown: the router answers 404); else the methods the path takes. */
  function refusedMethod(method: string, path: string): string[] | null {
    methodsOf ??= compileRoutes(routes());
    const allowed = methodsOf(path);
    return allowed === null || allowed.has(method) ? null : [...allowed].sort();
  }

  return async (request) => {
    const target = request.url;
    const path = pathOf(target);
    const problem = refusal(request, target, path);
    if (problem) return httpProblem(problem, path || "/");
    const pathStart = target.startsWith("/") ? -1 : target.indexOf("/", target.indexOf("://") + 3);
    // No Host (HTTP/1.0) or one shorter than four characters: give the router a URL it can slice.
    if (pathStart < 11) return handle(new Request(`http://localhost${target.slice(Math.max(0, pathStart))}`, request));
    return handle(request);
  };

  function refusal(request: Request, target: string, path: string): HttpProblem | null {
    // CONNECT names an authority, not a path (Bun hands over no path; Deno a URL without one, and
    // no Request can be made of it).
    if (path === "" || request.method === "CONNECT") return new Problem("malformed-request", 400, "Malformed request", "the request target must be a path");
    // A Host that is not one; an absolute URL that does not parse, or a bare path although a Host
    // was sent: Bun found the Host unusable.
    const host = request.headers.get("host");
    const badHost = (host !== null && !isValidHost(host)) || (target.startsWith("/") ? host !== null : !URL.canParse(target));
    if (badHost) {
      return new Problem("malformed-request", 400, "Malformed request", "the Host header is not a valid host", {}, [
        { path: "/headers/host", message: "not a valid host" },
      ]);
    }
    const allowed = refusedMethod(request.method, path);
    if (allowed)
      return new Problem("method-not-allowed", 405, "Method not allowed", `${request.method} is not allowed on ${path}`, { allow: allowed.join(", ") });
    return null;
  }
}
