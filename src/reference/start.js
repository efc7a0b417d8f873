// Renders the service's own OpenAPI document. A file of its own, not an inline script, so that
// the page's Content-Security-Policy allows scripts from this origin and nothing else.
window.ui = SwaggerUIBundle({ url: "/openapi/json", dom_id: "#swagger-ui", deepLinking: true });
