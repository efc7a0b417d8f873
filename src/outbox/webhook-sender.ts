/**
 * Delivers webhook entries (domain/webhooks.ts) over HTTP, signed as Standard Webhooks asks
 * (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256> …`, one
 * signature per secret of the tenant). Safe against the addresses a callback must not reach:
 * https only (unless allowed), every address the host resolves to checked against loopback,
 * private, link-local and metadata ranges on the connection actually made (node's `lookup` hook:
 * a second DNS answer cannot swap the address), no redirects, 5 s, at most 1 KB of an answer read.
 */
import { Buffer } from "node:buffer";
import { lookup as dnsLookup } from "node:dns";
import http from "node:http";
import https from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { Webhook } from "standardwebhooks";
import { secretsOf, type WebhookSecrets } from "../config/webhook-secrets.ts";
import type { OutboxWork } from "../domain/model.ts";
import type { PublishOutcome } from "./publisher.ts";

export interface WebhookSenderOptions {
  secrets: WebhookSecrets;
  /** LUCIUS_WEBHOOK_ALLOW_HTTP. */
  allowHttp: boolean;
  /** LUCIUS_WEBHOOK_ALLOW_HOSTS: hosts allowed to resolve to a refused range. */
  allowHosts: readonly string[];
  timeoutMs?: number;
}

/** A delivery's whole time, connection to answer. */
export const WEBHOOK_TIMEOUT_MS = 5000;
/** Of an answer, only this much is read (it is logged on failure, never kept). */
const MAX_ANSWER_BYTES = 1024;
/** Deliveries of one batch sent at once. */
const CONCURRENCY = 16;

/** Where a callback must not lead: loopback, private, shared, link-local (cloud metadata), multicast, reserved. */
const REFUSED = (() => {
  const list = new BlockList();
  for (const [net, bits] of [
    ["0.0.0.0", 8],
    ["10.0.0.0", 8],
    ["100.64.0.0", 10],
    ["127.0.0.0", 8],
    ["169.254.0.0", 16],
    ["172.16.0.0", 12],
    ["192.0.0.0", 24],
    ["192.168.0.0", 16],
    ["198.18.0.0", 15],
    ["224.0.0.0", 3],
  ] as const)
    list.addSubnet(net, bits, "ipv4");
  for (const [net, bits] of [
    ["::", 128],
    ["::1", 128],
    ["fc00::", 7],
    ["fe80::", 10],
    ["ff00::", 8],
    ["64:ff9b::", 96],
  ] as const)
    list.addSubnet(net, bits, "ipv6");
  return list;
})();

export function isRefusedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  return REFUSED.check(address, family === 4 ? "ipv4" : "ipv6");
}

class Refused extends Error {}

export function createWebhookSender(options: WebhookSenderOptions) {
  const timeoutMs = options.timeoutMs ?? WEBHOOK_TIMEOUT_MS;
  const allowed = new Set(options.allowHosts.map((host) => host.toLowerCase()));

  /** Resolves like the system does, then refuses the whole answer if any address is in a refused range. */
  const guardedLookup: LookupFunction = (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 4);
      const list = addresses as unknown as { address: string; family: number }[];
      if (!allowed.has(hostname.toLowerCase()) && list.some((a) => isRefusedAddress(a.address))) {
        return callback(new Refused(`${hostname} resolves to a refused address`), "", 4);
      }
      if ((lookupOptions as { all?: boolean }).all) return (callback as unknown as (e: null, a: typeof list) => void)(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };

  async function deliverOne(work: OutboxWork): Promise<PublishOutcome> {
    const delivery = work.entry.webhook!;
    const secrets = secretsOf(options.secrets, work.job.tenantId);
    if (secrets.length === 0) return { ok: false, error: `tenant ${work.job.tenantId} has no webhook secret`, retryable: false };
    let url: URL;
    try {
      url = new URL(delivery.url);
    } catch {
      return { ok: false, error: "the callback URL is not a URL", retryable: false };
    }
    if (url.protocol !== "https:" && !(url.protocol === "http:" && options.allowHttp)) {
      return { ok: false, error: `${url.protocol} callbacks are not allowed`, retryable: false };
    }
    const host = url.hostname.replace(/^\[|\]$/g, "");
    // A literal address is never looked up: it is checked here.
    if (isIP(host) !== 0 && isRefusedAddress(host) && !allowed.has(host.toLowerCase())) {
      return { ok: false, error: `${host} is a refused address`, retryable: false };
    }
    const body = JSON.stringify(delivery.body);
    const timestamp = new Date();
    const signature = secrets.map((secret) => new Webhook(secret).sign(work.entry.outboxId, timestamp, body)).join(" ");
    const headers = {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
      "user-agent": "lucius-webhooks",
      "webhook-id": work.entry.outboxId,
      "webhook-timestamp": String(Math.floor(timestamp.getTime() / 1000)),
      "webhook-signature": signature,
    };
    return new Promise<PublishOutcome>((resolve) => {
      const transport = url.protocol === "https:" ? https : http;
      const request = transport.request(
        url,
        { method: "POST", headers, lookup: guardedLookup, timeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) },
        (response) => {
          let read = 0;
          let answer = "";
          response.on("data", (chunk: Buffer) => {
            if (read < MAX_ANSWER_BYTES) answer += chunk.subarray(0, MAX_ANSWER_BYTES - read).toString("utf8");
            read += chunk.length;
            if (read >= MAX_ANSWER_BYTES) response.destroy();
          });
          const settle = () => resolve(outcomeOf(response.statusCode ?? 0, response.headers["retry-after"], answer));
          response.on("end", settle);
          response.on("close", settle);
          response.on("error", settle);
        },
      );
      request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      request.on("error", (error) =>
        resolve(error instanceof Refused ? { ok: false, error: error.message, retryable: false } : { ok: false, error: error.message, retryable: true }),
      );
      request.end(body);
    });
  }

  return {
    /** One outcome per delivery, in order (the dispatcher stores them as it stores publishes). */
    async deliver(items: OutboxWork[]): Promise<PublishOutcome[]> {
      const outcomes: PublishOutcome[] = new Array(items.length);
      for (let i = 0; i < items.length; i += CONCURRENCY) {
        const chunk = items.slice(i, i + CONCURRENCY);
        (await Promise.all(chunk.map(deliverOne))).forEach((outcome, j) => {
          outcomes[i + j] = outcome;
        });
      }
      return outcomes;
    },
  };
}

export type WebhookSender = ReturnType<typeof createWebhookSender>;

/** 2xx delivered; 429 and 5xx again later (after Retry-After when given); a redirect or other 4xx for good. */
function outcomeOf(status: number, retryAfter: string | undefined, answer: string): PublishOutcome {
  if (status >= 200 && status < 300) return { ok: true };
  const error = `the receiver answered ${status}${answer ? `: ${answer.slice(0, 200)}` : ""}`;
  if (status === 429 || status >= 500 || status === 0) {
    const seconds = retryAfterSeconds(retryAfter);
    return { ok: false, error, retryable: true, ...(seconds === undefined ? {} : { retryAfterSeconds: seconds }) };
  }
  if (status >= 300 && status < 400) return { ok: false, error: `${error} (redirects are not followed)`, retryable: false };
  return { ok: false, error, retryable: false };
}

function retryAfterSeconds(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
