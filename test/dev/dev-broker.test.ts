// The dev broker is test infrastructure the publisher's tests rely on: these pin down the
// Service Bus behaviours it claims, with the real SDK as the client.
import { afterEach, describe, expect, test } from "bun:test";
import { startBroker } from "../../dev/service-bus.ts";

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

async function setup(options: Parameters<typeof startBroker>[0] = {}) {
  const bus = await startBroker({ queues: ["jobs"], ...options });
  stop = bus.stop;
  return bus;
}

describe("dev broker", () => {
  test("a topic fans a message out to every subscription", async () => {
    const bus = await setup({ topics: { events: ["a", "b"] } });
    await bus.client.createSender("events").sendMessages({ messageId: "m1", body: { n: 1 } });
    expect((await bus.receive("events", 1, { subscription: "a" }))[0]?.body).toEqual({ n: 1 });
    expect((await bus.receive("events", 1, { subscription: "b" }))[0]?.messageId).toBe("m1");
  });

  test("a repeated messageId within the window is accepted and dropped", async () => {
    const bus = await setup();
    const sender = bus.client.createSender("jobs");
    await sender.sendMessages([
      { messageId: "same", body: 1 },
      { messageId: "other", body: 2 },
    ]);
    await sender.sendMessages({ messageId: "same", body: 3 });
    expect(bus.broker.duplicates("jobs")).toBe(1);
    expect(bus.broker.accepted("jobs").map((m) => m.message_id)).toEqual(["same", "other"]);
  });

  test("peekLock: abandon redelivers with a higher delivery count; dead-letter moves the message with its reason", async () => {
    const bus = await setup();
    await bus.client.createSender("jobs").sendMessages([
      { messageId: "a", body: "a" },
      { messageId: "b", body: "b" },
    ]);
    const receiver = bus.client.createReceiver("jobs", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
    const first = await receiver.receiveMessages(2, { maxWaitTimeInMs: 1000 });
    expect(first.map((m) => [m.messageId, m.deliveryCount])).toEqual([
      ["a", 0],
      ["b", 0],
    ]);
    await receiver.abandonMessage(first[0]!);
    await receiver.deadLetterMessage(first[1]!, { deadLetterReason: "Poison", deadLetterErrorDescription: "cannot parse" });
    // Asked for exactly what should come, so that the receive returns at once; depth 0 below shows nothing else stayed.
    const again = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    expect(again.map((m) => [m.messageId, m.deliveryCount])).toEqual([["a", 1]]);
    await receiver.completeMessage(again[0]!);
    await receiver.close();
    const dead = await bus.client
      .createReceiver("jobs", { subQueueType: "deadLetter", receiveMode: "receiveAndDelete" })
      .receiveMessages(1, { maxWaitTimeInMs: 2000 });
    expect(dead.map((m) => [m.messageId, m.deadLetterReason, m.deadLetterErrorDescription])).toEqual([["b", "Poison", "cannot parse"]]);
    expect(bus.broker.depth("jobs")).toBe(0);
  });

  test("receiveAndDelete takes messages off the queue at once", async () => {
    const bus = await setup();
    await bus.client.createSender("jobs").sendMessages([{ body: 1 }, { body: 2 }]);
    const got = await bus.client.createReceiver("jobs", { receiveMode: "receiveAndDelete" }).receiveMessages(2, { maxWaitTimeInMs: 2000 });
    expect(got.map((m) => m.body)).toEqual([1, 2]);
    expect(bus.broker.depth("jobs")).toBe(0);
  });

  test("an expired lock returns the message to the queue", async () => {
    const bus = await setup({ lockDurationMs: 300 });
    await bus.client.createSender("jobs").sendMessages({ messageId: "slow", body: 1 });
    const receiver = bus.client.createReceiver("jobs", { receiveMode: "peekLock", maxAutoLockRenewalDurationInMs: 0 });
    expect(await receiver.receiveMessages(1, { maxWaitTimeInMs: 500 })).toHaveLength(1);
    const redelivered = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    expect(redelivered.map((m) => [m.messageId, m.deliveryCount])).toEqual([["slow", 1]]);
  });

  test("an unknown entity is refused as not found, not retried", async () => {
    const bus = await setup();
    const error = await bus.client
      .createSender("nope")
      .sendMessages({ body: 1 })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "MessagingEntityNotFound", retryable: false });
  });
});
