import type { ServerResponse } from "node:http";

/**
 * One server-sent-events response. Bounded: a page that stops reading (a
 * suspended tab, a stalled proxy) is cut off once `maxBufferedBytes` wait in its
 * socket, rather than holding server memory; it reconnects to a fresh snapshot.
 */
export class EventStream {
  private ended = false;
  lastWriteAtMs: number;

  constructor(
    private readonly response: ServerResponse,
    private readonly maxBufferedBytes: number,
    private readonly nowMs: () => number,
    private readonly onOverflow: () => void,
  ) {
    this.lastWriteAtMs = nowMs();
  }

  /** Sends the status line and headers; `retryMs` is the reconnect delay EventSource clients use. */
  open(retryMs: number): void {
    this.response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      // Proxies (nginx) must pass events through as they come, not buffer them.
      "x-accel-buffering": "no",
    });
    this.write(`retry: ${retryMs}\n\n`);
  }

  /** One event; JSON never contains a raw newline, so one `data:` line carries it. */
  send(event: string, data: unknown): void {
    this.sendJson(event, JSON.stringify(data));
  }

  /** The same with the JSON already serialized (one serialization for every page). */
  sendJson(event: string, json: string): void {
    this.write(`event: ${event}\ndata: ${json}\n\n`);
  }

  /** A comment line: keeps idle connections from being timed out by proxies. */
  keepAlive(): void {
    this.write(": keep-alive\n\n");
  }

  get isEnded(): boolean {
    return this.ended;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.response.end();
  }

  private write(text: string): void {
    if (this.ended) return;
    this.response.write(text);
    this.lastWriteAtMs = this.nowMs();
    if (this.response.writableLength > this.maxBufferedBytes) {
      this.end();
      this.onOverflow();
    }
  }
}
