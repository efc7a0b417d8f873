/**
 * One job's whole trace, as an operator's collector receives it: the service runs as a process
 * (ledger on Azurite, the dev broker), told only by OTEL_* variables to export OTLP/HTTP to a
 * receiver in this test; a worker here answers over Service Bus, continuing the message's trace.
 */
import { describe, expect, test } from "bun:test";
import { eventually } from "../../dev/eventually.ts";
import { startBroker } from "../../dev/service-bus.ts";
import { startService } from "../support/service-process.ts";
import { sharedLedger } from "../support/stores.ts";
import { cleanupsAfterEach, tempDir, writeProtocols } from "../support/test-files.ts";

const dir = tempDir("tracing");
const cleanups = cleanupsAfterEach();

const { protocolsFile } = writeProtocols(dir, [
  { requestType: "document.traced", version: 1, steps: ["first", "second"].map((name) => ({ name, topic: name, payloadSchema: { type: "object" } })) },
]);

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
  service: string;
}

const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
const plainValue = (v: OtlpValue) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue));
const attributesOf = (list: { key: string; value: OtlpValue }[] = []) => Object.fromEntries(list.map((a) => [a.key, plainValue(a.value)]));

/** An OTLP/HTTP JSON receiver: every span of every export request. */
function startCollector(port = 0) {
  const spans: ReceivedSpan[] = [];
  let requests = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    async fetch(request) {
      requests++;
      const body = (await request.json()) as {
        resourceSpans: { resource: { attributes: { key: string; value: OtlpValue }[] }; scopeSpans: { spans: Record<string, unknown>[] }[] }[];
      };
      for (const resourceSpans of body.resourceSpans) {
        const service = String(attributesOf(resourceSpans.resource.attributes)["service.name"]);
        for (const scope of resourceSpans.scopeSpans) {
          for (const span of scope.spans) {
            spans.push({
              traceId: String(span.traceId),
              spanId: String(span.spanId),
              parentSpanId: String(span.parentSpanId ?? ""),
              name: String(span.name),
              kind: Number(span.kind),
              attributes: attributesOf(span.attributes as { key: string; value: OtlpValue }[]),
              links: ((span.links as { traceId: string; spanId: string }[]) ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
              service,
            });
          }
        }
      }
      return Response.json({});
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, spans, requests: () => requests, stop: () => server.stop(true) };
}

/** Takes each step's message, checks it carries its publish span, and answers over Service Bus with that trace. */
async function answerSteps(bus: Awaited<ReturnType<typeof startBroker>>, jobId: string) {
  const messages = [];
  for (const topic of ["first", "second"]) {
    const [message] = await bus.receive(topic, 1, { timeoutMs: 10_000 });
    if (!message) throw new Error(`no message on ${topic}`);
    messages.push(message);
    const body = message.body as { stepId: string; attempt: number };
    const sender = bus.client.createSender("lucius-events");
    await sender.sendMessages({
      body: { jobId, stepId: body.stepId, attempt: body.attempt, eventId: `${message.messageId}:succeeded`, status: "succeeded", result: { topic } },
      contentType: "application/json",
      ...(message.applicationProperties?.traceparent ? { applicationProperties: { traceparent: String(message.applicationProperties.traceparent) } } : {}),
    });
    await sender.close();
  }
  return messages;
}

async function runJob(env: Record<string, string>) {
  const bus = await startBroker({ topics: { first: ["workers"], second: ["workers"] }, queues: ["lucius-events"] });
  cleanups.push(() => bus.stop());
  const ledger = await sharedLedger();
  const service = await startService({
    ...ledger.env,
    LUCIUS_PROTOCOLS_FILE: protocolsFile,
    LUCIUS_SERVICEBUS_CONNECTION: bus.broker.connectionString,
    LUCIUS_EVENTS_ENTITY: "lucius-events",
    ...env,
  });
  cleanups.push(async () => {
    service.proc.kill("SIGTERM");
    await service.proc.exited;
  });
  const accepted = await fetch(new URL("/v1/commands", service.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ requestType: "document.traced", tenantId: "acme", payload: {} }),
  });
  expect(accepted.status).toBe(202);
  const { jobId } = (await accepted.json()) as { jobId: string };
  const messages = await answerSteps(bus, jobId);
  await eventually(async () => ((await (await fetch(new URL(`/v1/jobs/${jobId}`, service.url))).json()) as { status: string }).status === "succeeded", {
    timeoutMs: 10_000,
    what: "the job to succeed",
  });
  return { service, jobId, messages };
}

describe("OpenTelemetry", () => {
  test("one trace runs from POST /v1/commands through each publish and each worker's event to the job's end", async () => {
    const collector = startCollector();
    cleanups.push(() => collector.stop());
    const { service, jobId, messages } = await runJob({
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_TRACES_SAMPLER: "always_on",
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_SERVICE_NAME: "lucius-under-test",
    });
    const byId = (id: string) => collector.spans.find((s) => s.spanId === id);
    const childOf = (parent: ReceivedSpan, name: string) => collector.spans.find((s) => s.parentSpanId === parent.spanId && s.name === name);

    const server = await eventually(() => collector.spans.find((s) => s.name === "POST /v1/commands"), { timeoutMs: 5000, what: "the request's span" });
    expect(server.kind).toBe(KIND.server);
    expect(server.parentSpanId).toBe("");
    expect(server.service).toBe("lucius-under-test");
    expect(server.attributes["http.response.status_code"]).toBe(202);
    expect(server.attributes["http.route"]).toBe("/v1/commands");
    // Storage calls of the intake are its children.
    const storage = collector.spans.filter((s) => s.parentSpanId === server.spanId && s.kind === KIND.client);
    expect(storage.length).toBeGreaterThan(0);
    expect(storage.every((s) => s.attributes["db.system.name"] === "azure.tables")).toBe(true);

    // The first publish hangs under the request; its message points at it.
    const firstSend = await eventually(() => childOf(server, "send first"), { timeoutMs: 5000, what: "the first publish" });
    expect(firstSend.kind).toBe(KIND.producer);
    expect(firstSend.attributes["messaging.message.id"]).toBe(messages[0]!.messageId);
    const firstProps = messages[0]!.applicationProperties!;
    expect(firstProps.traceparent).toBe(`00-${server.traceId}-${firstSend.spanId}-01`);
    expect(firstProps["Diagnostic-Id"]).toBe(firstProps.traceparent);

    // The worker's event continues the message's trace; the next publish hangs under the event.
    const firstEvent = await eventually(() => childOf(firstSend, "process lucius-events"), { timeoutMs: 5000, what: "the first event's span" });
    expect(firstEvent.kind).toBe(KIND.consumer);
    const firstApply = await eventually(() => childOf(firstEvent, "apply step-event succeeded"), { timeoutMs: 5000, what: "the first apply span" });
    expect(firstApply.attributes["lucius.job.id"]).toBe(jobId);
    const secondSend = await eventually(() => childOf(firstApply, "send second"), { timeoutMs: 5000, what: "the second publish" });
    expect(messages[1]!.applicationProperties!.traceparent).toBe(`00-${server.traceId}-${secondSend.spanId}-01`);
    const secondEvent = await eventually(() => childOf(secondSend, "process lucius-events"), { timeoutMs: 5000, what: "the second event's span" });
    const secondApply = await eventually(() => childOf(secondEvent, "apply step-event succeeded"), { timeoutMs: 5000, what: "the last apply span" });
    expect(secondApply.attributes["lucius.event.outcome"]).toBe("applied");

    // One trace from the request to the end, every parent received.
    const chain = [server, firstSend, firstEvent, firstApply, secondSend, secondEvent, secondApply];
    expect(new Set(chain.map((s) => s.traceId)).size).toBe(1);
    for (const span of chain.slice(1)) expect(byId(span.parentSpanId)).toBeDefined();

    // Log lines written inside a span name it.
    // (written once each event's message is completed, which may follow the job's end)
    const received = await eventually(
      () => {
        const lines = service.logs.filter((l) => l.msg === "step event received");
        return lines.length === 2 ? lines : undefined;
      },
      { timeoutMs: 5000, what: "both events' log lines" },
    );
    expect(received.every((l) => l.trace_id === server.traceId && typeof l.span_id === "string")).toBe(true);
  }, 40_000);

  test("with no endpoint set, no exporter starts and nothing is sent, not even to the default port", async () => {
    // 4318 is where an SDK started without an endpoint would send.
    let collector: ReturnType<typeof startCollector> | null = null;
    try {
      collector = startCollector(4318);
    } catch {
      collector = null;
    }
    if (collector) cleanups.push(() => collector.stop());
    const { service, messages } = await runJob({ OTEL_SERVICE_NAME: "lucius-untraced", OTEL_TRACES_SAMPLER: "always_on", OTEL_BSP_SCHEDULE_DELAY: "50" });
    expect(service.logs.some((l) => String(l.msg).includes("OpenTelemetry"))).toBe(false);
    // The messages carry no span of ours: no Diagnostic-Id, no traceparent (the request sent none).
    for (const message of messages) {
      expect(message.applicationProperties?.["Diagnostic-Id"]).toBeUndefined();
      expect(message.applicationProperties?.traceparent).toBeUndefined();
    }
    expect(service.logs.some((l) => "trace_id" in l)).toBe(false);
    // Stopping flushes whatever an exporter would hold: still nothing arrives.
    service.proc.kill("SIGTERM");
    await service.proc.exited;
    if (collector) expect(collector.requests()).toBe(0);
  }, 40_000);
});
