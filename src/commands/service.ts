/**
 * Intake as plain functions: validate, apply the idempotency rules,
 * store the job, hand its first directive to the dispatcher. Knows nothing of HTTP.
 */
import { type Caller, holdsTenant } from "../auth/caller.ts";
import { type ProtocolRegistry, payloadViolations, type RegisteredProtocol } from "../config/protocols.ts";
import { secretsOf, type WebhookSecrets } from "../config/webhook-secrets.ts";
import {
  type FieldViolation,
  ForbiddenError,
  IdempotencyKeyInFlightError,
  IdempotencyKeyReusedError,
  RateLimitedError,
  UnknownRequestTypeError,
  ValidationFailedError,
} from "../domain/errors.ts";
import { acceptedEntry } from "../domain/history.ts";
import { newJobId } from "../domain/ids.ts";
import type { IdempotencyRecord, Job, JobAggregate, OutboxWork } from "../domain/model.ts";
import type { HubMessage } from "../domain/notices.ts";
import { planJob } from "../domain/plan-job.ts";
import { DEFAULT_WEBHOOK_EVENTS } from "../domain/webhooks.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import type { JobStore, NewJob } from "../storage/job-store.ts";
import type { CommandEnvelope } from "../validation/envelope.ts";
import { requestFingerprint } from "../validation/idempotency.ts";
import type { TenantRateLimit } from "./tenant-rate-limit.ts";

export interface SubmitCommand {
  envelope: CommandEnvelope;
  /** The key this request is made under, if any: one job per (tenant, key). */
  idempotencyKey: string | null;
  /** A valid W3C traceparent, if the request had one. */
  traceparent: string | null;
  /** Who submits: it must hold the command's tenant. */
  caller: Caller;
}

export interface SubmitResult {
  job: Job;
  /** True when the key had been used for this request before: no new job was created. */
  replayed: boolean;
}

export interface CommandServiceOptions {
  store: JobStore;
  protocols: ProtocolRegistry;
  /** Null when no broker is configured: entries stay pending. */
  dispatcher: Dispatcher | null;
  retryDelaySeconds: number;
  /**
   * How long a claimed key without its job counts as "still being stored" (409). After that the
   * writer is presumed dead and a retry of the same request completes the job under the claimed id.
   */
  claimTimeoutSeconds?: number;
  /** LUCIUS_IDEMPOTENCY_TTL: an older key no longer holds its job (default 24 h). */
  idempotencyTtlSeconds?: number;
  /** LUCIUS_TENANT_RATE_LIMIT, when on. */
  rateLimit?: TenantRateLimit | null;
  now?: () => Date;
  /** Told when a job is stored (streams listen). */
  announce?: (notice: HubMessage) => void;
  /** What a command's callback is checked against. */
  webhooks?: { secrets: WebhookSecrets; allowHttp: boolean };
}

export interface CommandService {
  submit(command: SubmitCommand): Promise<SubmitResult>;
}

const DEFAULT_CLAIM_TIMEOUT_SECONDS = 10;
const DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86400;

export function createCommandService(options: CommandServiceOptions): CommandService {
  const { store, protocols, dispatcher } = options;
  const now = options.now ?? (() => new Date());
  const claimTimeoutMs = (options.claimTimeoutSeconds ?? DEFAULT_CLAIM_TIMEOUT_SECONDS) * 1000;

  /** A callback's URL and the tenant's secret, checked before anything is stored. */
  function callbackViolations(envelope: CommandEnvelope): FieldViolation[] {
    const callback = envelope.callback;
    if (!callback) return [];
    const violations: FieldViolation[] = [];
    let url: URL | null = null;
    try {
      url = new URL(callback.url);
    } catch {
      violations.push({ path: "/callback/url", message: "must be an absolute URL" });
    }
    if (url && url.protocol !== "https:" && !(url.protocol === "http:" && options.webhooks?.allowHttp)) {
      violations.push({ path: "/callback/url", message: options.webhooks?.allowHttp ? "must be https or http" : "must be https" });
    }
    if (url && (url.username !== "" || url.password !== "")) violations.push({ path: "/callback/url", message: "must not carry credentials" });
    if (secretsOf(options.webhooks?.secrets ?? new Map(), envelope.tenantId).length === 0) {
      violations.push({ path: "/callback", message: `tenant '${envelope.tenantId}' has no webhook secret to sign with (LUCIUS_WEBHOOK_SECRETS_FILE)` });
    }
    return violations;
  }

  function validate(envelope: CommandEnvelope): RegisteredProtocol {
    const protocol = protocols.get(envelope.requestType);
    if (!protocol) {
      throw new UnknownRequestTypeError(`no protocol is registered for requestType '${envelope.requestType}'`, {
        errors: [
          {
            path: "/requestType",
            message: `unknown request type; known: ${protocols
              .list()
              .map((p) => p.requestType)
              .join(", ")}`,
          },
        ],
      });
    }
    const violations = [...payloadViolations(protocol, envelope.tenantId, envelope.payload), ...callbackViolations(envelope)];
    if (violations.length > 0) {
      throw new ValidationFailedError(`the payload violates the schemas of '${protocol.requestType}'`, { errors: violations });
    }
    return protocol;
  }

  /** The job to store, with the first entry of its history (who submitted it, what went out). */
  function plan(jobId: string, command: SubmitCommand, protocol: RegisteredProtocol, key: string | null): NewJob {
    const { envelope } = command;
    const planned = planJob({
      jobId,
      command: {
        requestType: envelope.requestType,
        tenantId: envelope.tenantId,
        correlationId: envelope.correlationId ?? null,
        idempotencyKey: key,
        payload: envelope.payload,
        ...(envelope.callback ? { callback: { url: envelope.callback.url, events: envelope.callback.events ?? DEFAULT_WEBHOOK_EVENTS } } : {}),
      },
      protocol,
      traceparent: command.traceparent,
      now: now(),
      retryDelaySeconds: options.retryDelaySeconds,
    });
    const accepted = acceptedEntry(planned, command.caller.name);
    return { ...planned, job: accepted.job, history: accepted.entry };
  }

  function dispatchNew(aggregate: JobAggregate): Job {
    dispatcher?.dispatch(pendingDirectives(aggregate));
    return aggregate.job;
  }

  /** An existing claim: the same request replays its job, a different one is refused. */
  async function answerExistingClaim(
    existing: IdempotencyRecord,
    fingerprint: string,
    command: SubmitCommand,
    protocol: RegisteredProtocol,
  ): Promise<SubmitResult> {
    if (existing.fingerprint !== fingerprint) {
      throw new IdempotencyKeyReusedError("this idempotency key was used for a different request of this tenant");
    }
    const stored = await store.getJob(existing.jobId);
    const age = now().getTime() - Date.parse(existing.createdAt);
    if (!stored && age < claimTimeoutMs) {
      throw new IdempotencyKeyInFlightError("the first request with this idempotency key is still being stored", {
        retryAfterSeconds: Math.max(1, Math.ceil((claimTimeoutMs - age) / 1000)),
      });
    }
    // Store the job again under the claimed id: this completes whatever a writer that stopped
    // part-way left undone (the job itself after the claim timeout, or its index row), and
    // changes nothing that exists.
    const result = await store.createJob(plan(existing.jobId, command, protocol, existing.key), null);
    if (result.outcome !== "stored") throw new Error("a create without a claim cannot find the key taken");
    return { job: stored ? result.aggregate.job : dispatchNew(result.aggregate), replayed: true };
  }

  return {
    async submit(command) {
      const { envelope } = command;
      if (!holdsTenant(command.caller, envelope.tenantId)) {
        throw new ForbiddenError(`not allowed to submit commands for tenant '${envelope.tenantId}'`, "tenant-not-held");
      }
      const waitSeconds = options.rateLimit?.take(envelope.tenantId) ?? 0;
      if (waitSeconds > 0) {
        throw new RateLimitedError(`tenant '${envelope.tenantId}' is over its rate of commands; retry after ${waitSeconds} s`, {
          retryAfterSeconds: waitSeconds,
        });
      }
      const key = command.idempotencyKey;
      const protocol = validate(envelope);
      const jobId = newJobId();
      const planned = plan(jobId, command, protocol, key);
      const claim =
        key === null ? null : { tenantId: envelope.tenantId, key, fingerprint: requestFingerprint(envelope), jobId, createdAt: planned.job.createdAt };
      const ttlSeconds = options.idempotencyTtlSeconds ?? DEFAULT_IDEMPOTENCY_TTL_SECONDS;
      const result = await store.createJob(planned, claim, new Date(now().getTime() - ttlSeconds * 1000));
      if (result.outcome === "key-taken") return answerExistingClaim(result.existing, claim!.fingerprint, command, protocol);
      const { job } = result.aggregate;
      if (planned.history) {
        options.announce?.({
          kind: "change",
          tenantId: job.tenantId,
          jobId,
          requestType: job.requestType,
          seq: planned.history.seq,
          jobStatus: job.status,
          entry: planned.history,
        });
      }
      return { job: dispatchNew(result.aggregate), replayed: false };
    },
  };
}

/** Directives of a stored job that nobody has tried to publish yet. */
function pendingDirectives(aggregate: JobAggregate): OutboxWork[] {
  return aggregate.outbox
    .filter((entry) => entry.status === "pending" && entry.attempts === 0)
    .flatMap((entry) => {
      const step = aggregate.steps.find((s) => s.stepId === entry.stepId);
      return step ? [{ job: aggregate.job, step, entry }] : [];
    });
}
