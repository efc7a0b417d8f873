import { describe, expect, test } from "bun:test";
import { eventually } from "../../dev/eventually.ts";
import { sampleJob, storeJob } from "../../dev/job-fixtures.ts";
import { createRecordingPublisher } from "../../dev/recording-publisher.ts";
import type { OutboxWork } from "../../src/domain/model.ts";
import { markOutboxSent } from "../../src/domain/transitions.ts";
import { silentLogger } from "../../src/logging/logger.ts";
import { createDispatcher } from "../../src/outbox/dispatcher.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

const NOW = new Date("2026-06-01T12:00:00.000Z");

async function setup(options: { publishTimeoutSeconds?: number; maxAttempts?: number } = {}) {
  const store = createMemoryStore();
  const recording = createRecordingPublisher();
  const dispatcher = createDispatcher({
    store,
    publisher: recording.publisher,
    logger: silentLogger,
    publishTimeoutSeconds: options.publishTimeoutSeconds ?? 2,
    retryDelaySeconds: 30,
    maxAttempts: options.maxAttempts ?? 3,
    random: () => 0,
    now: () => NOW,
  });
  async function stored(count: number, topicOf?: (i: number) => string): Promise<OutboxWork[]> {
    const items: OutboxWork[] = [];
    for (let i = 0; i < count; i++) {
      const planned = sampleJob();
      if (topicOf) planned.outbox[0]!.topic = planned.steps[0]!.topic = topicOf(i);
      const { job, steps, outbox } = await storeJob(store, planned);
      items.push({ job, step: steps[0]!, entry: outbox[0]! });
    }
    return items;
  }
  const entryOf = async (item: OutboxWork) => (await store.getJob(item.job.jobId))!.outbox[0]!;
  return { store, recording, dispatcher, stored, entryOf };
}

describe("dispatcher", () => {
  test("publishes per topic in batches of at most 100 and marks every entry sent", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const items = await stored(250, (i) => (i % 5 === 0 ? "topic-b" : "topic-a"));
    const release = recording.stall();
    dispatcher.dispatch(items.slice(0, 1));
    dispatcher.dispatch(items.slice(1));
    release();
    await dispatcher.drain();
    expect(recording.published).toHaveLength(250);
    expect(new Set(recording.published.map((p) => p.message.messageId)).size).toBe(250);
    expect(recording.calls.every((c) => c.count <= 100)).toBe(true);
    // The first call went alone; what arrived meanwhile was gathered into full batches.
    expect(recording.calls.length).toBeLessThan(10);
    for (const item of items) expect((await entryOf(item)).status).toBe("sent");
    expect(recording.published.filter((p) => p.topic === "topic-b")).toHaveLength(50);
  });

  test("a publish that outlives LUCIUS_OUTBOX_PUBLISH_TIMEOUT is abandoned and recorded as a retryable failure", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup({ publishTimeoutSeconds: 0.1 });
    const [item] = await stored(1);
    recording.stall();
    // Without the timeout the stalled publish never ends and this test runs into its own deadline.
    dispatcher.dispatch([item!]);
    await dispatcher.drain();
    expect(await entryOf(item!)).toMatchObject({ status: "pending", attempts: 1, lastError: "publish timed out after 0.1s" });
  });

  test("a permanent failure parks the entry as failed at once with the reason", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const [item] = await stored(1);
    recording.failWith("messaging entity 'ocr-requests' not found", false);
    dispatcher.dispatch([item!]);
    await dispatcher.drain();
    expect(await entryOf(item!)).toMatchObject({ status: "failed", attempts: 1, lastError: "messaging entity 'ocr-requests' not found", nextAttemptAt: null });
  });

  test("one refused message fails alone; the rest of its batch is sent", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const items = await stored(3);
    const tooLarge = items[1]!.entry.outboxId;
    recording.rejectWhen((m) => (m.messageId === tooLarge ? { ok: false, error: "message too large", retryable: false } : null));
    dispatcher.dispatch(items);
    await dispatcher.drain();
    expect((await Promise.all(items.map(entryOf))).map((e) => e.status)).toEqual(["sent", "failed", "sent"]);
  });

  test("a retryable failure backs off from LUCIUS_OUTBOX_RETRY_DELAY", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const [item] = await stored(1);
    recording.failWith("connection refused", true);
    dispatcher.dispatch([item!]);
    await dispatcher.drain();
    const entry = await entryOf(item!);
    // random() = 0 gives half the base delay of 30 s.
    expect(entry.nextAttemptAt).toBe(new Date(NOW.getTime() + 15_000).toISOString());
  });

  test("an entry that someone else already sent is left as they stored it", async () => {
    const { store, dispatcher, stored, entryOf } = await setup();
    const [item] = await stored(1);
    const other = await store.saveChanges(item!.job.jobId, { outbox: [markOutboxSent(item!.entry, "2026-01-01T00:00:00.000Z")] });
    dispatcher.dispatch([item!]);
    await dispatcher.drain();
    expect(await entryOf(item!)).toMatchObject({ status: "sent", sentAt: "2026-01-01T00:00:00.000Z", etag: other.outbox[0]!.etag });
  });

  test("an entry its worker's answer marked sent first costs no write of its own", async () => {
    const { store, dispatcher, stored, entryOf } = await setup();
    const [item] = await stored(1);
    const answered = await store.saveChanges(item!.job.jobId, { outbox: [markOutboxSent(item!.entry, "2026-01-01T00:00:00.000Z")] });
    dispatcher.answered([item!.entry.outboxId]);
    let writes = 0;
    const saveChanges = store.saveChanges;
    store.saveChanges = (...args) => {
      writes++;
      return saveChanges(...args);
    };
    dispatcher.dispatch([item!]);
    await dispatcher.drain();
    expect(writes).toBe(0);
    expect(await entryOf(item!)).toMatchObject({ status: "sent", etag: answered.outbox[0]!.etag });
  });

  test("drain resolves only after in-flight publishes are stored", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const [item] = await stored(1);
    const release = recording.stall();
    dispatcher.dispatch([item!]);
    let drained = false;
    const draining = dispatcher.drain().then(() => (drained = true));
    await eventually(() => recording.calls.length === 1);
    expect(drained).toBe(false);
    release();
    await draining;
    expect((await entryOf(item!)).status).toBe("sent");
  });
});

describe("dispatcher: the fast path and the sweeper never hold one entry at once", () => {
  test("an entry that falls due before a publish could end is left to the sweeper", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup({ publishTimeoutSeconds: 2 });
    const [soon, later] = await stored(2);
    // Due one second after NOW: a 2 s publish could still run when the sweeper takes it.
    const dueSoon = { ...soon!, entry: { ...soon!.entry, nextAttemptAt: new Date(NOW.getTime() + 1000).toISOString() } };
    const dueLater = { ...later!, entry: { ...later!.entry, nextAttemptAt: new Date(NOW.getTime() + 30_000).toISOString() } };
    dispatcher.dispatch([dueSoon, dueLater]);
    await dispatcher.drain();
    expect(recording.published.map((p) => p.message.messageId)).toEqual([later!.entry.outboxId]);
    expect(await entryOf(soon!)).toMatchObject({ status: "pending", attempts: 0 });
  });

  test("after a batch the broker refused whole, the rest of the topic's queue waits for the sweeper", async () => {
    const { recording, dispatcher, stored, entryOf } = await setup();
    const items = await stored(250);
    recording.failWith("connection refused", true);
    const release = recording.stall();
    dispatcher.dispatch(items.slice(0, 1));
    dispatcher.dispatch(items.slice(1));
    release();
    await dispatcher.drain();
    expect(recording.calls).toHaveLength(1);
    const entries = await Promise.all(items.map(entryOf));
    expect(entries.filter((e) => e.attempts === 1)).toHaveLength(1);
    expect(entries.every((e) => e.status === "pending")).toBe(true);
  });
});
