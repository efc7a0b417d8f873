/**
 * A Server-Sent Events response (text/event-stream) fed by pushes, with the bounds a long-lived
 * response needs: a client that does not read is dropped once MAX_BUFFERED_BYTES wait for it, a
 * comment every 15 s keeps proxies from closing an idle one, and `close` ends it cleanly.
 */

/** What the stream's producer writes to. */
export interface SseSink {
  send(event: string, data: unknown, id?: string): void;
  close(): void;
  readonly closed: boolean;
}

/** Bytes written but not yet read by the client, at most: past this it is dropped. */
export const MAX_BUFFERED_BYTES = 1024 * 1024;
export const KEEP_ALIVE_MS = 15_000;

/**
 * The response, and the sink to feed it. `onKeepAlive` runs with every keep-alive (a stream uses
 * it to catch up on what no notification told it); `onClose` once, however it ends.
 */
export function sseResponse(
  hooks: { onKeepAlive?: () => void; onClose: () => void },
  headers: Record<string, string> = {},
): { response: Response; sink: SseSink } {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let closed = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const finish = () => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    hooks.onClose();
  };
  const write = (text: string) => {
    if (closed) return;
    const bytes = encoder.encode(text);
    // desiredSize counts down from the high-water mark as bytes wait: below -MAX the client reads nothing.
    if ((controller.desiredSize ?? 0) < -MAX_BUFFERED_BYTES) {
      finish();
      controller.error(new Error("the client does not read its stream"));
      return;
    }
    controller.enqueue(bytes);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        // At once, so that the headers go out before the first event: the reconnection delay.
        c.enqueue(encoder.encode("retry: 3000\n\n"));
        timer = setInterval(() => {
          write(": keep-alive\n\n");
          hooks.onKeepAlive?.();
        }, KEEP_ALIVE_MS);
      },
      cancel() {
        finish();
      },
    },
    { highWaterMark: 0, size: (chunk) => chunk?.byteLength ?? 0 },
  );
  const sink: SseSink = {
    send(event, data, id) {
      const lines = [`event: ${event}`, ...(id === undefined ? [] : [`id: ${id}`]), `data: ${JSON.stringify(data)}`];
      write(`${lines.join("\n")}\n\n`);
    },
    close() {
      if (closed) return;
      finish();
      controller.close();
    },
    get closed() {
      return closed;
    },
  };
  const response = new Response(stream, {
    headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", "x-accel-buffering": "no", ...headers },
  });
  return { response, sink };
}
