/**
 * A Lucius worker: takes step messages from topic subscriptions (peekLock), runs the handler of
 * the message's topic, reports the step's event to the service's events entity, and only then
 * settles the message, so a crash anywhere before redelivers it and the service, which remembers
 * event ids, applies its outcome once.
 */
import { isServiceBusError, ServiceBusClient, type ServiceBusReceivedMessage, type ServiceBusReceiver, type ServiceBusSender } from "@azure/service-bus";
import { type JsonObject, readStepMessage, type StepMessage } from "./message.ts";
import { startStepSpan } from "./trace.ts";

/** Thrown by a handler: the step failed, reported as a `failed` event (retried by the service when `retryable`). */
export class StepFailure extends Error {
  readonly retryable: boolean;
  constructor(
    readonly code: string,
    message: string,
    options: { retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StepFailure";
    this.retryable = options.retryable ?? false;
  }
}

export interface StepContext {
  /**
   * Aborted when the attempt's deadline passes, when the service stopped hearing from it for its
   * heartbeat interval, or when the worker stops and its grace period is over. `signal.reason`
   * says which (`deadline`, `heartbeat`, `stopping`).
   */
  signal: AbortSignal;
  /** Reports how far the step is (0–100) and a note; also a heartbeat. */
  progress(percent?: number, message?: string): Promise<void>;
}

// biome-ignore lint/suspicious/noExplicitAny: a handler's payload type is its own
export type StepHandler<Payload = any, Result extends JsonObject = JsonObject> = (
  message: StepMessage<Payload>,
  context: StepContext,
) => Promise<Result | StepWithoutResult>;

/** A handler with nothing to report returns nothing (`async () => {}` is a Promise<void>): the result is `{}`. */
// biome-ignore lint/suspicious/noConfusingVoidType: what an async function without a return statement gives
type StepWithoutResult = undefined | void;

export interface WorkerLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface WorkerOptions {
  /** A Service Bus connection string, or a client the caller owns (then not closed by stop). */
  connection: string | ServiceBusClient;
  /** Topic → the handler of its messages. */
  handlers: Record<string, StepHandler>;
  /** The subscription taken on every topic (default `workers`). */
  subscription?: string;
  /** Messages handled at once, per topic (default 8). */
  concurrency?: number;
  /** Where events go when a message names no `replyTo`. */
  eventsEntity?: string;
  /** Largest result sent, as UTF-8 JSON (default 200 KiB: the service's limit for a step message's payload and results together). */
  maxResultBytes?: number;
  /** How long stop() lets running handlers finish before aborting their signals (default 10 s). */
  stopGraceMs?: number;
  /** Lock renewal of a message held by a long handler (default 5 minutes; 0 turns it off). */
  maxLockRenewalMs?: number;
  /** Stop gracefully on SIGINT and SIGTERM (default true). */
  handleSignals?: boolean;
  log?: WorkerLog;
}

export interface Worker {
  /** Stops taking messages, lets running handlers finish (then aborts them), closes what it opened. */
  stop(): Promise<void>;
  /** Handlers running now. */
  readonly running: number;
}

const DEFAULT_MAX_RESULT_BYTES = 200 * 1024;
const consoleLog: WorkerLog = {
  info: (message, fields) => console.log(JSON.stringify({ level: "info", msg: message, ...fields })),
  warn: (message, fields) => console.warn(JSON.stringify({ level: "warn", msg: message, ...fields })),
  error: (message, fields) => console.error(JSON.stringify({ level: "error", msg: message, ...fields })),
};

type StepEvent =
  | { status: "succeeded"; result: JsonObject }
  | { status: "failed"; error: { code: string; message: string; retryable: boolean } }
  | { status: "progress"; percent?: number; message?: string };

/**
 * The service's limits on an event (docs/API.md, step events): an event past them is refused
 * (dead-lettered over Service Bus) and the step would wait for its timeout. Cut to fit instead.
 */
const LIMITS = { code: 200, errorMessage: 4000, note: 500 };

function fitted(event: StepEvent): StepEvent {
  if (event.status === "failed") {
    const code = event.error.code.trim().slice(0, LIMITS.code) || "ERROR";
    return { status: "failed", error: { ...event.error, code, message: event.error.message.slice(0, LIMITS.errorMessage) } };
  }
  if (event.status === "progress") {
    return {
      status: "progress",
      ...(event.percent === undefined || !Number.isFinite(event.percent) ? {} : { percent: Math.min(100, Math.max(0, event.percent)) }),
      ...(event.message === undefined ? {} : { message: event.message.slice(0, LIMITS.note) }),
    };
  }
  return event;
}

const jsonBytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value)).length;

export function createWorker(options: WorkerOptions): Worker {
  const log = options.log ?? consoleLog;
  const ownsClient = typeof options.connection === "string";
  const client = typeof options.connection === "string" ? new ServiceBusClient(options.connection) : options.connection;
  const subscription = options.subscription ?? "workers";
  const maxResultBytes = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
  const senders = new Map<string, ServiceBusSender>();
  const receivers: ServiceBusReceiver[] = [];
  const subscriptions: { close(): Promise<void> }[] = [];
  /** Each running handler's controller, to abort when the grace period ends. */
  const running = new Set<AbortController>();
  const idle: (() => void)[] = [];
  let stopping = false;

  const senderFor = (entity: string) => {
    let sender = senders.get(entity);
    if (!sender) {
      sender = client.createSender(entity);
      senders.set(entity, sender);
    }
    return sender;
  };

  async function handle(topic: string, handler: StepHandler, received: ServiceBusReceivedMessage, receiver: ServiceBusReceiver): Promise<void> {
    const message = readStepMessage(received);
    if ("problem" in message) {
      log.error("not a step message: dead-lettered", { topic, messageId: received.messageId, problem: message.problem });
      await receiver.deadLetterMessage(received, { deadLetterReason: "NotAStepMessage", deadLetterErrorDescription: message.problem });
      return;
    }
    const events = message.replyTo ?? options.eventsEntity;
    if (!events) {
      log.error("the message names no events entity (LUCIUS_EVENTS_ENTITY unset?): abandoned", { topic, messageId: message.messageId });
      await receiver.abandonMessage(received).catch(() => {});
      return;
    }
    // The service counts the attempt's deadline and heartbeat from the send: so does the worker.
    // A message that waited past either is an attempt the service has already given up.
    const sentAt = received.enqueuedTimeUtc?.getTime() ?? Date.now();
    const expired =
      (message.deadline !== null && message.deadline.getTime() <= Date.now()) ||
      (message.heartbeatSeconds !== undefined && Date.now() - sentAt > message.heartbeatSeconds * 1000);
    if (expired) {
      log.warn("the attempt ended while its message waited: completed without running", { topic, jobId: message.jobId, attempt: message.attempt });
      await receiver.completeMessage(received);
      return;
    }
    const span = startStepSpan(topic, message);
    const controller = new AbortController();
    running.add(controller);
    const timers: ReturnType<typeof setTimeout>[] = [];
    let lastHeard = sentAt;
    let beats = 0;

    /** Sends one event of this attempt; its id is derived from the message, so a redelivery sends the same one. */
    const send = async (event: StepEvent, eventId: string) => {
      await senderFor(events).sendMessages({
        body: { jobId: message.jobId, stepId: message.stepId, attempt: message.attempt, eventId, ...fitted(event) },
        contentType: "application/json",
        correlationId: message.jobId,
        ...(span.traceparent ? { applicationProperties: { traceparent: span.traceparent } } : {}),
      });
      lastHeard = Date.now();
    };
    // Progress ids also name the delivery: a redelivery's beats must not be taken for the first one's.
    const progress = (id: string, percent?: number, note?: string) =>
      send(
        { status: "progress", ...(percent === undefined ? {} : { percent }), ...(note === undefined ? {} : { message: note }) },
        `${message.messageId}:${id}:${message.deliveryCount}:${++beats}`,
      );

    if (message.deadline) {
      timers.push(setTimeout(() => controller.abort("deadline"), Math.max(0, message.deadline.getTime() - Date.now())));
    }
    if (message.heartbeatSeconds) {
      // At once: the message may have waited a while in the subscription.
      void progress("beat").catch(() => {});
      const intervalMs = (message.heartbeatSeconds * 1000) / 3;
      const beat = setInterval(() => {
        // The service stops waiting once it heard nothing for a whole interval: so does the handler.
        if (Date.now() - lastHeard > message.heartbeatSeconds! * 1000) controller.abort("heartbeat");
        else void progress("beat").catch(() => {});
      }, intervalMs);
      timers.push(beat);
    }
    const context: StepContext = { signal: controller.signal, progress: (percent, note) => progress("progress", percent, note) };

    try {
      let outcome: StepEvent;
      try {
        const result = (await span.run(() => handler(message, context))) ?? {};
        // The next step's message carries the payload, every result so far and this one, within the limit.
        const bytes = jsonBytes(result);
        const budget = maxResultBytes - jsonBytes(message.payload) - jsonBytes(message.results);
        outcome =
          bytes > budget
            ? {
                status: "failed",
                error: {
                  code: "RESULT_TOO_LARGE",
                  message: `the result is ${bytes} bytes of JSON; the payload and earlier results leave ${Math.max(0, budget)} of ${maxResultBytes}: store it elsewhere and report a reference`,
                  retryable: false,
                },
              }
            : { status: "succeeded", result };
        if (outcome.status === "failed") log.error("the step's result is too large to report: reported as failed", { topic, jobId: message.jobId, bytes });
      } catch (error) {
        if (!(error instanceof StepFailure)) throw error;
        outcome = { status: "failed", error: { code: error.code, message: error.message, retryable: error.retryable } };
      }
      // Sent even after the signal aborted: the service decides (it ignores an event of an attempt that is over).
      await send(outcome, `${message.messageId}:${outcome.status}`);
      span.end(outcome.status === "succeeded" ? null : outcome.error.message);
      // Settled only once the event is sent: a crash before this redelivers the message.
      await receiver.completeMessage(received);
      log.info("step reported", { topic, step: message.stepName, jobId: message.jobId, attempt: message.attempt, status: outcome.status });
    } catch (error) {
      span.end(error instanceof Error ? error.message : String(error));
      const over = controller.signal.aborted && controller.signal.reason !== "stopping";
      if (over) {
        log.warn("the attempt ended (deadline or heartbeat): message completed without an event", {
          topic,
          jobId: message.jobId,
          reason: controller.signal.reason,
        });
        await receiver.completeMessage(received).catch(() => {});
        return;
      }
      // Anything else (the events entity did not answer, a bug, a stop): the message comes back later.
      log.warn("handler or report failed: message abandoned for a later delivery", {
        topic,
        jobId: message.jobId,
        stepId: message.stepId,
        error: error instanceof Error ? error.message : String(error),
      });
      await receiver.abandonMessage(received).catch(() => {});
    } finally {
      span.end(null);
      for (const timer of timers) clearTimeout(timer);
      running.delete(controller);
      if (running.size === 0) for (const wake of idle.splice(0)) wake();
    }
  }

  for (const [topic, handler] of Object.entries(options.handlers)) {
    const receiver = client.createReceiver(topic, subscription, {
      receiveMode: "peekLock",
      maxAutoLockRenewalDurationInMs: options.maxLockRenewalMs ?? 5 * 60_000,
    });
    receivers.push(receiver);
    subscriptions.push(
      receiver.subscribe(
        {
          processMessage: (received) => handle(topic, handler, received, receiver),
          processError: async ({ error }) => {
            if (!stopping) log.warn("receiver error", { topic, code: isServiceBusError(error) ? error.code : undefined, error: error.message });
          },
        },
        { autoCompleteMessages: false, maxConcurrentCalls: options.concurrency ?? 8 },
      ),
    );
  }
  log.info("worker taking messages", { topics: Object.keys(options.handlers), subscription });

  let stopped: Promise<void> | null = null;
  const onSignal = () => void worker.stop();
  if (options.handleSignals ?? true) {
    process.once?.("SIGINT", onSignal);
    process.once?.("SIGTERM", onSignal);
  }

  const worker: Worker = {
    get running() {
      return running.size;
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        process.off?.("SIGINT", onSignal);
        process.off?.("SIGTERM", onSignal);
        await Promise.allSettled(subscriptions.map((s) => s.close()));
        const finished = running.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => idle.push(resolve));
        const graceMs = options.stopGraceMs ?? 10_000;
        let grace: ReturnType<typeof setTimeout> | undefined;
        const timedOut = new Promise<boolean>((resolve) => {
          grace = setTimeout(() => resolve(true), graceMs);
        });
        if (await Promise.race([finished.then(() => false), timedOut])) {
          for (const controller of running) controller.abort("stopping");
          let last: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([finished, new Promise((resolve) => (last = setTimeout(resolve, 2000)))]);
          clearTimeout(last);
        }
        clearTimeout(grace);
        await Promise.allSettled([...receivers, ...senders.values()].map((link) => link.close()));
        if (ownsClient) await client.close();
        log.info("worker stopped");
      })();
      return stopped;
    },
  };
  return worker;
}
