/**
 * The API reference page (GET /openapi): Swagger UI rendering the service's own OpenAPI document
 * (GET /openapi/json). Every asset is served by the service itself from the pinned
 * `swagger-ui-dist` package (text imports, so the compiled binary carries them), and the page's
 * Content-Security-Policy allows no other origin: it works offline, and no third-party script
 * ever runs on the origin where the console keeps the operator's key.
 */
import { Elysia } from "elysia";
import styles from "swagger-ui-dist/swagger-ui.css" with { type: "text" };
import bundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import { NotFoundError } from "../domain/errors.ts";
import page from "./reference.html" with { type: "text" };
import start from "./start.js" with { type: "text" };

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  // Swagger UI sets styles on elements as it renders.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const COMMON_HEADERS = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

function asText(imported: unknown, name: string): string {
  // With `type: "text"` an import is the file's text, on Bun and Deno alike; Bun's types know
  // only the bundler's meaning of HTML and CSS imports, hence the check.
  if (typeof imported !== "string") throw new Error(`the API reference's ${name} was not imported as text`);
  return imported;
}

const ASSETS = new Map<string, { body: string; type: string }>([
  ["swagger-ui-bundle.js", { body: asText(bundle, "script"), type: "text/javascript; charset=utf-8" }],
  ["swagger-ui.css", { body: asText(styles, "styles"), type: "text/css; charset=utf-8" }],
  ["start.js", { body: asText(start, "start script"), type: "text/javascript; charset=utf-8" }],
]);
const PAGE = asText(page, "page");

export function referenceRoutes() {
  const hidden = { detail: { tags: ["operations"], summary: "The API reference page and its assets", hide: true } };
  return new Elysia({ name: "reference" })
    .get(
      "/openapi",
      () => new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache", ...COMMON_HEADERS } }),
      hidden,
    )
    .get(
      "/openapi/assets/:name",
      ({ params }) => {
        const asset = ASSETS.get(params.name);
        if (!asset) throw new NotFoundError(`no asset ${params.name}`);
        // The assets change only with the service's version; an hour keeps reloads cheap.
        return new Response(asset.body, { headers: { "content-type": asset.type, "cache-control": "public, max-age=3600", ...COMMON_HEADERS } });
      },
      hidden,
    );
}
