/**
 * The operator console (GET /console): one HTML page with its script and styles inline, bundled
 * into the service (a text import, so the compiled binary carries it; no CDN, no build step). The
 * page holds no data: everything it shows comes from the JSON routes, with the operator's key or
 * token, so it is as closed as those routes. It exists only where the admin routes do.
 */
import { createHash } from "node:crypto";
import { Elysia } from "elysia";
import bundled from "./console.html" with { type: "text" };

// With `type: "text"` the import is the file's text (Bun and Deno alike); Bun's types know only
// its bundler form of HTML imports, hence the check and the cast.
if (typeof bundled !== "string") throw new Error("the console page was not imported as text");
const page = bundled as unknown as string;

/** The inline script's digest, so the Content-Security-Policy allows that script and no other. */
function scriptHash(html: string): string {
  const script = /<script type="module">([\s\S]*?)<\/script>/.exec(html)?.[1] ?? "";
  return `'sha256-${createHash("sha256").update(script, "utf8").digest("base64")}'`;
}

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `script-src ${scriptHash(page)}`,
  "style-src 'unsafe-inline'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export function consoleRoutes() {
  return new Elysia({ name: "console" }).get(
    "/console",
    () =>
      new Response(page, {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "content-security-policy": CONTENT_SECURITY_POLICY,
          "cache-control": "no-cache",
          "x-content-type-options": "nosniff",
          "referrer-policy": "no-referrer",
        },
      }),
    { detail: { tags: ["operations"], summary: "The operator console (with the admin routes only)", hide: true } },
  );
}
