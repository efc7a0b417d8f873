/** The baseline: a bare Bun.serve handler that parses the same JSON and answers 202. */
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT ?? 0),
  async fetch(request) {
    if (request.method === "GET") return new Response("ok"); // readiness probe of the benchmark
    const body = (await request.json()) as { requestType: string; tenantId: string };
    return Response.json(
      { jobId: crypto.randomUUID(), status: "accepted", requestType: body.requestType, tenantId: body.tenantId, createdAt: new Date().toISOString() },
      { status: 202 },
    );
  },
});
console.log(`bare server on ${server.url.href}`);
