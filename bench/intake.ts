/**
 * POST /v1/commands on `memory` driven by `wrk` (an external generator, one thread, 32
 * connections), beside two reference servers in the same run: a bare Bun.serve handler that
 * parses the same JSON and answers 202, and a minimal Elysia route with a TypeBox body. The
 * service runs at the default log level (one line per request), at `warn`, and with
 * LUCIUS_AUTH_MODE=jwt (tokens of an identity provider served by this process), and, to show
 * where the time goes, with a store that keeps no job (bench/forgetful-service.ts). Each server
 * is a fresh process per run; five rounds, the best of each kept (single 6 s runs on a two-core
 * machine vary by ±15%, so a ratio of two targets is also given as the median of the rounds'
 * back-to-back pairs). Then an open-loop run at half
 * the service's peak for the latency percentiles, of the service and of its forgetful twin.
 * With OpenTelemetry on (every request sampled, spans exported over OTLP/HTTP protobuf to a
 * receiver in this process that counts them) beside it off: the ratio of the two is the cost of
 * tracing. `--only info,traced` runs some targets alone (names below); `--rounds 3` takes the best of three.
 *
 *   bun run bench:intake [--seconds 6] [--connections 32]
 */
import { parseArgs } from "node:util";
import { AUDIENCE, ISSUER, signingKey, startIdentityProvider, token } from "../dev/identity-provider.ts";
import { type LoadResult, type MakeRequest, openLoop } from "./support/load.ts";
import { startScriptProcess } from "./support/service-process.ts";
import { ensureWrk, type WrkResult, wrk } from "./support/wrk.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "6" },
    connections: { type: "string", default: "32" },
    only: { type: "string" },
    rounds: { type: "string", default: "5" },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);

await ensureWrk();
const key = await signingKey("RS256", "bench");
const idp = startIdentityProvider([key]);
const bearer = await token(key, { tenants: ["bench"], roles: ["commands.submit"], exp: Math.floor(Date.now() / 1000) + 3600 });

const body = JSON.stringify({
  requestType: "document.ocr",
  tenantId: "bench",
  payload: { documentId: "d1", documentUri: "https://files.example/y.pdf", contentType: "application/pdf", language: "en" },
});

interface Target {
  name: string;
  script: string;
  env?: Record<string, string>;
  headers?: Record<string, string>;
}

const service = "src/main.ts";
/** Throughput, not the memory bound, is measured here: room for every job of a run (bench:memory measures the bound). */
const roomy = { LUCIUS_MEMORY_MAX_JOBS: "5000000" };
const jwtEnv = { LUCIUS_AUTH_MODE: "jwt", LUCIUS_AUTH_JWKS_URL: idp.jwksUrl, LUCIUS_AUTH_ISSUER: ISSUER, LUCIUS_AUTH_AUDIENCE: AUDIENCE };
const bare: Target = { name: "bare Bun.serve", script: "bench/support/bare-server.ts" };
const elysia: Target = { name: "minimal Elysia + TypeBox", script: "bench/support/elysia-server.ts" };
const info: Target = { name: "lucius, log level info (default)", script: service, env: { LUCIUS_LOG_LEVEL: "info", ...roomy } };
const warn: Target = { name: "lucius, log level warn", script: service, env: { LUCIUS_LOG_LEVEL: "warn", ...roomy } };
// Where the time goes: the same service with a store that keeps nothing (bench/forgetful-service.ts).
const infoForgetful: Target = { name: "lucius, info, store keeps nothing", script: "bench/support/forgetful-service.ts", env: { LUCIUS_LOG_LEVEL: "info" } };
const warnForgetful: Target = { name: "lucius, warn, store keeps nothing", script: "bench/support/forgetful-service.ts", env: { LUCIUS_LOG_LEVEL: "warn" } };
const jwt: Target = {
  name: "lucius, info, LUCIUS_AUTH_MODE=jwt",
  script: service,
  env: { LUCIUS_LOG_LEVEL: "info", ...roomy, ...jwtEnv },
  headers: { Authorization: `Bearer ${bearer}` },
};
/**
 * Counts the spans exported to it over OTLP/HTTP in protobuf (the default), without decoding:
 * every span of this run is named "POST /v1/commands", so its bytes are counted. Decoding here
 * would take CPU from the service on a two-core machine and bias the ratio.
 */
const collector = (() => {
  let spans = 0;
  const marker = Buffer.from("POST /v1/commands");
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const bytes = Buffer.from(await request.arrayBuffer());
      for (let at = bytes.indexOf(marker); at >= 0; at = bytes.indexOf(marker, at + marker.length)) spans++;
      return new Response(null, { status: 200 });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, spans: () => spans, stop: () => server.stop(true) };
})();
const traced: Target = {
  name: "lucius, info, tracing on (always sampled)",
  script: service,
  env: {
    LUCIUS_LOG_LEVEL: "info",
    ...roomy,
    OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    // The service's own export buffer defaults (src/telemetry/sdk.ts) hold this rate.
    OTEL_TRACES_SAMPLER: "always_on",
  },
};
// `traced` right after `info`: the pair runs back to back in every round, so drift hits both alike.
const named = { bare, elysia, info, traced, warn, infoForgetful, warnForgetful, jwt };
const targets = values.only
  ? values.only.split(",").map((name) => {
      if (!(name in named)) throw new Error(`--only: no target ${name} (${Object.keys(named).join(", ")})`);
      return named[name as keyof typeof named];
    })
  : Object.values(named);

/** A fresh process of the target; its output is not read. */
async function start(target: Target) {
  const server = await startScriptProcess(target.script, { NODE_ENV: "production", ...target.env });
  return { url: `${server.url}/v1/commands`, stop: server.stop };
}

/** Requests wrk completed and spans that reached the receiver, over every run of the traced target. */
const tracedTotals = { requests: 0, spansBefore: 0, spans: 0 };

async function measure(target: Target): Promise<WrkResult> {
  const server = await start(target);
  const spansBefore = collector.spans();
  let requests = 0;
  try {
    const options = { body, connections, ...(target.headers ? { headers: target.headers } : {}) };
    requests += (await wrk(server.url, { ...options, seconds: 1 })).requests; // warm-up: JIT, connections, token and key caches
    const result = await wrk(server.url, { ...options, seconds });
    requests += result.requests;
    return result;
  } finally {
    await server.stop();
    if (target === traced) {
      tracedTotals.requests += requests;
      tracedTotals.spans += collector.spans() - spansBefore;
    }
  }
}

console.log(
  `intake: wrk -t1 -c${connections} -d${seconds}s, POST document.ocr without an idempotency key; Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores`,
);
const best = new Map<string, WrkResult>();
/** Each round's rate by target, for ratios of runs made back to back. */
const perRound: Map<string, number>[] = [];
for (let round = 0; round < Number(values.rounds); round++) {
  // Rounds interleave the targets, so that a noisy neighbour hurts all alike.
  for (const target of targets) {
    const result = await measure(target);
    if (result.errors > 0) console.log(`  ${target.name}: ${result.errors} errors in round ${round + 1}`);
    const kept = best.get(target.name);
    if (!kept || result.perSecond > kept.perSecond) best.set(target.name, result);
    const rates = perRound[round] ?? new Map<string, number>();
    perRound[round] = rates;
    rates.set(target.name, result.perSecond);
  }
}

const row = (name: string, r: WrkResult) =>
  `  ${name.padEnd(38)} ${r.perSecond.toFixed(0).padStart(7)} req/s  p50 ${r.p50Ms.toFixed(2).padStart(6)} ms  p99 ${r.p99Ms.toFixed(2).padStart(6)} ms`;
console.log(`\npeak (best of ${values.rounds} rounds)`);
for (const target of targets) console.log(row(target.name, best.get(target.name)!));
// A target left out by --only has no rate: its ratios print NaN.
const rate = (target: Target) => best.get(target.name)?.perSecond ?? Number.NaN;
const ratio = (a: Target, b: Target) => (rate(a) / rate(b)).toFixed(2);
console.log(`\n  Elysia / bare:                        ${ratio(elysia, bare)}`);
console.log(`  lucius (info) / bare:                 ${ratio(info, bare)}   (target ≥ 0.5)`);
console.log(`  lucius (warn) / bare:                 ${ratio(warn, bare)}`);
console.log(`  info, store keeps nothing / bare:     ${ratio(infoForgetful, bare)}   (what keeping the jobs costs: see bench/forgetful-service.ts)`);
console.log(`  warn, store keeps nothing / bare:     ${ratio(warnForgetful, bare)}`);
console.log(`  lucius jwt / lucius none:             ${ratio(jwt, info)}   (target ≥ 0.8)`);
const pairRatios = perRound.map((rates) => (rates.get(traced.name) ?? Number.NaN) / (rates.get(info.name) ?? Number.NaN)).sort((a, b) => a - b);
console.log(
  `  tracing on / tracing off:             ${ratio(traced, info)} best of each; ${pairRatios[Math.floor(pairRatios.length / 2)]?.toFixed(2)} median of the rounds' back-to-back pairs (${pairRatios.map((r) => r.toFixed(2)).join(", ")})   (target ≥ 0.8)`,
);
console.log(
  `  spans received / requests answered:   ${tracedTotals.spans} / ${tracedTotals.requests} (one server span per request; fewer means the SDK dropped spans)`,
);

// Open loop: requests at a fixed rate whatever the answers' pace, so that queueing shows in the
// percentiles (a closed loop slows down with the server and hides it). Half the service's peak
// is well within what a generator in this process can send.
const half = Math.floor((rate(info) || 10_000) / 2);
const make =
  (url: string): MakeRequest =>
  () =>
    new Request(url, { method: "POST", headers: { "content-type": "application/json" }, body });
const fmt = (r: LoadResult) => `p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  (${r.requests} ok, ${r.errors} errors)`;
console.log(`\nopen loop at half the service's peak: ${half} req/s for ${seconds}s, fresh processes`);
for (const target of [bare, info, infoForgetful].filter((t) => targets.includes(t))) {
  const server = await start(target);
  try {
    const result = await openLoop(make(server.url), { ratePerSecond: half, seconds, expectStatus: 202, maxInFlight: 256 });
    console.log(`  ${target.name.padEnd(38)} ${fmt(result)}${target === info ? "   (target p99 < 10 ms)" : ""}`);
  } finally {
    await server.stop();
  }
}
idp.stop();
collector.stop();
