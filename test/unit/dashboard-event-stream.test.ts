import type { ServerResponse } from "node:http";
import { describe, expect, it } from "vitest";
import { EventStream } from "../../services/dashboard/event-stream.js";

/** The part of a ServerResponse the stream uses; `writableLength` is what the socket has not taken yet. */
class SlowResponse {
  written: string[] = [];
  writableLength = 0;
  ended = false;
  status = 0;
  writeHead(status: number): this {
    this.status = status;
    return this;
  }
  write(text: string): boolean {
    this.written.push(text);
    this.writableLength += Buffer.byteLength(text);
    return true;
  }
  end(): void {
    this.ended = true;
  }
}

describe("EventStream", () => {
  it("writes events in the text/event-stream format, one data line of JSON each", () => {
    const response = new SlowResponse();
    const stream = new EventStream(response as unknown as ServerResponse, 1 << 20, () => 0, () => undefined);
    stream.open(2000);
    stream.send("instance", { kind: "added", note: "two\nlines" });
    stream.keepAlive();
    expect(response.status).toBe(200);
    expect(response.written).toEqual(["retry: 2000\n\n", 'event: instance\ndata: {"kind":"added","note":"two\\nlines"}\n\n', ": keep-alive\n\n"]);
  });

  it("ends a stream whose reader falls behind by more than its bound, once, and writes nothing after", () => {
    const response = new SlowResponse();
    let overflows = 0;
    const stream = new EventStream(response as unknown as ServerResponse, 100, () => 0, () => (overflows += 1));
    stream.open(2000);
    stream.send("load", { padding: "x".repeat(40) });
    expect(response.ended).toBe(false);
    stream.send("load", { padding: "x".repeat(40) });
    expect(response.ended).toBe(true);
    expect(stream.isEnded).toBe(true);
    const writes = response.written.length;
    stream.send("load", {});
    expect(response.written).toHaveLength(writes);
    expect(overflows).toBe(1);
  });
});
