/**
 * `bun run broker`: the dev broker standalone, with the bundled protocols' topics (each with a
 * `workers` subscription), for running the service locally without Azure.
 *
 *   bun run broker [--port 5672] [--queue name ...] [--topic name ...]   (topics: the bundled protocols' by default)
 */
import { parseArgs } from "node:util";
import { startDevBroker } from "../dev/dev-broker.ts";
import { BUNDLED_TOPICS } from "../dev/service-bus.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "5672" },
    queue: { type: "string", multiple: true, default: [] },
    topic: { type: "string", multiple: true, default: [] },
  },
});
// Each topic with a `workers` subscription, as the example worker reads them.
const topics = values.topic.length > 0 ? Object.fromEntries(values.topic.map((topic) => [topic, ["workers"]])) : BUNDLED_TOPICS;
const broker = await startDevBroker({ port: Number(values.port), topics, queues: values.queue });
console.log(`dev broker listening on 127.0.0.1:${broker.port}`);
console.log(
  `topics: ${Object.entries(topics)
    .map(([topic, subs]) => `${topic} (subscriptions: ${subs.join(", ")})`)
    .join("; ")}`,
);
console.log(`LUCIUS_SERVICEBUS_CONNECTION='${broker.connectionString}'`);
const stop = async () => {
  await broker.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
