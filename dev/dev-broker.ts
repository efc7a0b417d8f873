/**
 * A small AMQP 1.0 broker on rhea that speaks enough of Azure Service Bus's dialect for the real
 * @azure/service-bus client: CBS put-token, queues, topics with subscriptions, batched sends,
 * peekLock and receiveAndDelete, complete / abandon / dead-letter, lock expiry, duplicate
 * detection by messageId, and fault switches. docs/TESTING.md says what the SDK expects of it.
 *
 * Not a Service Bus: no $management (peek, renew-lock, schedule), no sessions, no filters.
 */
import { randomUUID } from "node:crypto";
import type { Server, Socket } from "node:net";
import rhea, { type Connection, type Delivery, type EventContext, type Sender } from "rhea";

/** rhea's typings leave out what a broker needs: link internals, message headers, outcomes. */
// biome-ignore lint/suspicious/noExplicitAny: AMQP messages are loosely shaped maps, read field by field.
type Message = Record<string, any>;
type Link = { local: { attach: Record<string, unknown> }; remote: { attach: Record<string, unknown> }; credit: number };
const internals = (link: unknown) => link as Link;
type Outcome = { described(): unknown };
const outcomes = rhea.message as unknown as {
  accepted(): Outcome;
  modified(fields: object): Outcome;
  rejected(fields: object): Outcome;
  decode(buffer: Buffer): Message;
};

/**
 * The JSON body of a message the broker accepted (see `accepted`): the SDK sends a JSON body as
 * an AMQP data section of its UTF-8 bytes.
 */
export function acceptedBody<T>(message: { body?: unknown }): T {
  const content = (message.body as { content?: Uint8Array }).content ?? message.body;
  return JSON.parse(new TextDecoder().decode(content as Uint8Array)) as T;
}

export interface DevBrokerOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** topic → its subscriptions. */
  topics?: Record<string, string[]>;
  queues?: string[];
  /** Duplicate detection window; 0 turns it off. Real Service Bus defaults to 10 minutes. */
  duplicateDetectionWindowMs?: number;
  /** What the broker announces on sender links; createMessageBatch sizes batches from it. */
  maxMessageSize?: number;
  lockDurationMs?: number;
  maxDeliveryCount?: number;
}

interface Stored {
  message: Message;
  sequenceNumber: number;
  enqueuedAt: Date;
  deliveryCount: number;
}

interface Locked {
  stored: Stored;
  queue: Queue;
  lockedUntil: number;
}

/** A queue, or a topic subscription: something messages are received from. */
class Queue {
  readonly available: Stored[] = [];
  readonly consumers = new Set<Sender>();
  deadLetters?: Queue;
  constructor(readonly path: string) {}
}

const DEAD_LETTER_SUFFIX = "/$deadletterqueue";
const BATCH_FORMAT = 0x80013700;

export interface DevBroker {
  readonly port: number;
  readonly connectionString: string;
  /** Every message accepted on an entity (queue or topic), duplicates excluded, in order. */
  accepted(entity: string): Message[];
  /** Messages dropped as duplicates, per entity. */
  duplicates(entity: string): number;
  /** What a subscription or queue holds now (not locked), for assertions. */
  depth(path: string): number;
  /** Faults: refuse new connections (and drop open ones), leave sends unanswered, drop every link. */
  refuseConnections(on: boolean): Promise<void>;
  stallSends(on: boolean): void;
  dropLinks(): void;
  close(): Promise<void>;
}

export async function startDevBroker(options: DevBrokerOptions = {}): Promise<DevBroker> {
  const host = options.host ?? "127.0.0.1";
  const windowMs = options.duplicateDetectionWindowMs ?? 10 * 60_000;
  const maxMessageSize = options.maxMessageSize ?? 256 * 1024;
  const lockDurationMs = options.lockDurationMs ?? 30_000;
  const maxDeliveryCount = options.maxDeliveryCount ?? 10;

  const queues = new Map<string, Queue>();
  const topics = new Map<string, Queue[]>();
  const seen = new Map<string, Map<string, number>>();
  const acceptedLog = new Map<string, Message[]>();
  const duplicateCount = new Map<string, number>();
  const locks = new Map<string, Locked>();
  let sequence = 0;
  let stalled = false;
  const stalledDeliveries: Delivery[] = [];

  function addQueue(path: string): Queue {
    const queue = new Queue(path);
    queue.deadLetters = new Queue(path + DEAD_LETTER_SUFFIX);
    queues.set(path.toLowerCase(), queue);
    queues.set(queue.deadLetters.path.toLowerCase(), queue.deadLetters);
    return queue;
  }
  for (const name of options.queues ?? []) {
    addQueue(name);
    seen.set(name.toLowerCase(), new Map());
  }
  for (const [topic, subscriptions] of Object.entries(options.topics ?? {})) {
    topics.set(
      topic.toLowerCase(),
      subscriptions.map((sub) => addQueue(`${topic}/subscriptions/${sub}`)),
    );
    seen.set(topic.toLowerCase(), new Map());
  }

  const container = rhea.create_container({
    id: "lucius-dev-broker",
    // Accept a sent message only once it is stored; let abandon stay an abandon.
    autoaccept: false,
    treat_modified_as_released: false,
    tcp_no_delay: true,
  } as never);
  container.sasl_server_mechanisms.enable_anonymous();
  container.sasl_server_mechanisms.enable_plain(() => true);

  const entityOf = (address: string | undefined) => (address ?? "").replace(/^amqps?:\/\/[^/]+\//, "").toLowerCase();

  function notFound(context: EventContext, address: string): void {
    const link = context.sender ?? context.receiver;
    link?.close({ condition: "amqp:not-found", description: `The messaging entity '${address}' could not be found.` });
  }

  // ---- receiving from clients (their senders, our receivers) ----

  container.on("receiver_open", (context: EventContext) => {
    const receiver = context.receiver!;
    const address = entityOf(receiver.target?.address);
    const link = internals(receiver);
    link.local.attach.target = link.remote.attach.target;
    link.local.attach.source = link.remote.attach.source;
    link.local.attach.max_message_size = maxMessageSize;
    if (address === "$cbs") return;
    if (!topics.has(address) && !queues.has(address)) notFound(context, address);
  });

  function decodeAll(context: EventContext): Message[] {
    if ((context as { format?: number }).format === BATCH_FORMAT) {
      const outer = outcomes.decode(context.message as unknown as Buffer);
      const body = outer.body as { content: Buffer[]; multiple?: boolean };
      const parts = body.multiple ? body.content : [body.content as unknown as Buffer];
      return parts.map((part) => outcomes.decode(part));
    }
    return [context.message as Message];
  }

  function store(entity: string, message: Message): void {
    const id = message.message_id === undefined ? undefined : String(message.message_id);
    const window = seen.get(entity)!;
    const now = Date.now();
    if (windowMs > 0 && id !== undefined) {
      const at = window.get(id);
      if (at !== undefined && now - at < windowMs) {
        duplicateCount.set(entity, (duplicateCount.get(entity) ?? 0) + 1);
        return;
      }
      window.set(id, now);
    }
    let log = acceptedLog.get(entity);
    if (!log) {
      log = [];
      acceptedLog.set(entity, log);
    }
    log.push(message);
    const targets = topics.get(entity) ?? [queues.get(entity)!];
    for (const queue of targets) {
      // Shared between subscriptions: a stored message is never changed in place, only copied.
      queue.available.push({ message, sequenceNumber: ++sequence, enqueuedAt: new Date(), deliveryCount: 0 });
      pump(queue);
    }
  }

  function answerCbs(context: EventContext): void {
    const request = context.message as Message;
    const replyTo = String(request.reply_to ?? "");
    const reply = context.connection.find_sender((sender: Sender) => sender.name === replyTo || sender.source?.address === replyTo);
    context.delivery!.accept();
    reply?.send({
      correlation_id: request.message_id,
      application_properties: { "status-code": 200, "status-description": "OK" },
      body: "",
    });
  }

  container.on("message", (context: EventContext) => {
    const address = entityOf(context.receiver!.target?.address);
    if (address === "$cbs") return answerCbs(context);
    if (stalled) {
      stalledDeliveries.push(context.delivery!);
      return;
    }
    for (const message of decodeAll(context)) store(address, message);
    context.delivery!.accept();
  });

  // ---- delivering to clients (their receivers, our senders) ----

  container.on("sender_open", (context: EventContext) => {
    const sender = context.sender!;
    const link = internals(sender);
    for (const field of ["source", "target", "snd_settle_mode", "rcv_settle_mode"]) link.local.attach[field] = link.remote.attach[field];
    // rhea answers a drain only while credit is left; the client waits for drain=true regardless.
    (sender as unknown as { _get_drain: () => boolean })._get_drain = function (this: {
      _draining: boolean;
      _drained: boolean;
      credit: number;
      delivery_count: number;
    }) {
      if (!this._draining || !this._drained) return false;
      while (this.credit) {
        ++this.delivery_count;
        --this.credit;
      }
      return true;
    };
    const address = entityOf(sender.source?.address);
    if (address === "$cbs") return;
    const queue = queues.get(address);
    if (!queue) return notFound(context, address);
    queue.consumers.add(sender);
    pump(queue);
  });

  const queueOf = (sender: Sender) => queues.get(entityOf(sender.source?.address));
  const receiveAndDelete = (sender: Sender) => internals(sender).local.attach.snd_settle_mode === 1;

  /** Deliveries handed to rhea but not yet written: rhea counts credit only when it writes. */
  function unwritten(sender: Sender): number {
    const outgoing = (
      sender.session as unknown as {
        outgoing: { next_pending_delivery: number; next_delivery_id: number; deliveries: { by_id(id: number): { link: Sender } | undefined } };
      }
    ).outgoing;
    let count = 0;
    for (let id = outgoing.next_pending_delivery; id < outgoing.next_delivery_id; id++) if (outgoing.deliveries.by_id(id)?.link === sender) count++;
    return count;
  }

  function pump(queue: Queue): void {
    for (const sender of queue.consumers) {
      if (!sender.is_open()) continue;
      let budget = internals(sender).credit - unwritten(sender);
      while (budget > 0 && queue.available.length > 0) {
        deliver(queue, sender, queue.available.shift()!);
        budget--;
      }
      if (queue.available.length === 0) sender.set_drained(true);
    }
  }

  function deliver(queue: Queue, sender: Sender, stored: Stored): void {
    const lockToken = randomUUID();
    const lockedUntil = Date.now() + lockDurationMs;
    const message: Message = {
      ...stored.message,
      // rhea flattens the header's fields onto the message.
      delivery_count: stored.deliveryCount,
      message_annotations: {
        ...(stored.message.message_annotations ?? {}),
        "x-opt-sequence-number": rhea.types.wrap_long(stored.sequenceNumber),
        "x-opt-enqueued-time": stored.enqueuedAt,
        ...(receiveAndDelete(sender) ? {} : { "x-opt-locked-until": new Date(lockedUntil) }),
      },
    };
    // The client turns the 16-byte tag into the lock token (a UUID).
    const tag = Buffer.from(lockToken.replaceAll("-", ""), "hex");
    sender.send(message as never, tag);
    if (!receiveAndDelete(sender)) locks.set(tag.toString("hex"), { stored, queue, lockedUntil });
  }

  function settle(context: EventContext, outcome: "complete" | "abandon" | "deadletter"): void {
    const delivery = context.delivery!;
    const key = Buffer.from(delivery.tag as unknown as Uint8Array).toString("hex");
    const lock = locks.get(key);
    locks.delete(key);
    if (lock) {
      if (outcome === "abandon") requeue(lock);
      else if (outcome === "deadletter") deadLetter(lock, delivery);
    }
    // Echo the outcome, settled and without an error, then let rhea forget the delivery.
    const state =
      outcome === "complete" ? outcomes.accepted() : outcome === "abandon" ? outcomes.modified({ undeliverable_here: false }) : outcomes.rejected({});
    delivery.update(true, state.described() as never);
    (delivery as unknown as { remote_settled: boolean }).remote_settled = true;
  }

  function requeue(lock: Locked): void {
    lock.stored.deliveryCount++;
    if (lock.stored.deliveryCount >= maxDeliveryCount) {
      lock.queue.deadLetters?.available.push({
        ...lock.stored,
        message: {
          ...lock.stored.message,
          application_properties: { ...lock.stored.message.application_properties, DeadLetterReason: "MaxDeliveryCountExceeded" },
        },
      });
      return;
    }
    lock.queue.available.unshift(lock.stored);
    pump(lock.queue);
  }

  function deadLetter(lock: Locked, delivery: Delivery): void {
    const info = ((delivery.remote_state as { error?: { info?: Record<string, unknown> } } | undefined)?.error?.info ?? {}) as Record<string, unknown>;
    const properties = { ...lock.stored.message.application_properties, ...info };
    const target = lock.queue.deadLetters!;
    target.available.push({ ...lock.stored, message: { ...lock.stored.message, application_properties: properties } });
    pump(target);
  }

  container.on("accepted", (context: EventContext) => context.sender && settle(context, "complete"));
  container.on("released", (context: EventContext) => context.sender && settle(context, "abandon"));
  container.on("modified", (context: EventContext) => context.sender && settle(context, "abandon"));
  container.on("rejected", (context: EventContext) => context.sender && settle(context, "deadletter"));
  container.on("sendable", (context: EventContext) => {
    const queue = queueOf(context.sender!);
    if (queue) pump(queue);
  });
  container.on("sender_draining", (context: EventContext) => {
    const queue = queueOf(context.sender!);
    if (queue) pump(queue);
    else context.sender!.set_drained(true);
  });
  const forget = (context: EventContext) => {
    const sender = context.sender;
    if (sender) queueOf(sender)?.consumers.delete(sender);
  };
  container.on("sender_close", forget);
  container.on("disconnected", (context: EventContext) => {
    for (const queue of queues.values()) for (const sender of queue.consumers) if (sender.connection === context.connection) queue.consumers.delete(sender);
  });
  // A client going away is not the broker's error.
  container.on("error", () => {});
  container.on("connection_error", () => {});

  const lockSweeper = setInterval(() => {
    const now = Date.now();
    for (const [key, lock] of locks) {
      if (lock.lockedUntil <= now) {
        locks.delete(key);
        requeue(lock);
      }
    }
  }, 250);
  lockSweeper.unref?.();

  const connections = new Set<Connection>();
  container.on("connection_open", (context: EventContext) => connections.add(context.connection));
  container.on("connection_close", (context: EventContext) => connections.delete(context.connection));

  let server: Server;
  let port = options.port ?? 0;
  const sockets = new Set<Socket>();
  async function listen(): Promise<void> {
    server = container.listen({ host, port }) as unknown as Server;
    server.on("connection", (socket: Socket) => {
      // Nagle's algorithm against the client's delayed ACKs costs 40 ms per batch round trip.
      socket.setNoDelay(true);
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
    port = (server.address() as { port: number }).port;
  }
  await listen();

  /** Closes every connection at once, as a broker that went away would. */
  const dropAll = () => {
    for (const connection of connections) connection.close({ condition: "amqp:connection:forced", description: "dev broker: dropped" });
    connections.clear();
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };

  return {
    get port() {
      return port;
    },
    get connectionString() {
      return `Endpoint=sb://${host}:${port};SharedAccessKeyName=dev;SharedAccessKey=dev;UseDevelopmentEmulator=true;`;
    },
    accepted: (entity) => acceptedLog.get(entity.toLowerCase()) ?? [],
    duplicates: (entity) => duplicateCount.get(entity.toLowerCase()) ?? 0,
    depth: (path) => queues.get(path.toLowerCase())?.available.length ?? 0,
    async refuseConnections(on) {
      if (on) {
        dropAll();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      } else {
        await listen();
      }
    },
    stallSends(on) {
      stalled = on;
      if (!on) for (const delivery of stalledDeliveries.splice(0)) delivery.release({ delivery_failed: true });
    },
    dropLinks() {
      for (const connection of connections) {
        for (const link of [...collectLinks(connection)]) link.close({ condition: "amqp:link:detach-forced", description: "dev broker: link dropped" });
      }
    },
    async close() {
      clearInterval(lockSweeper);
      dropAll();
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    },
  };
}

function collectLinks(connection: Connection): { close(error?: unknown): void }[] {
  const sessions = (connection as unknown as { local_channel_map: Record<string, { links: Record<string, { close(error?: unknown): void }> }> })
    .local_channel_map;
  return Object.values(sessions ?? {}).flatMap((session) => Object.values(session.links ?? {}));
}
