import { PassThrough } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { forwardLines, maxLineChars } from "../../sidecar/supervisor/output-forwarder.js";

function capture(): { stream: PassThrough; messages: () => Promise<{ msg: string; partial?: boolean }[]> } {
  const lines: string[] = [];
  const logger = pino({ base: null, timestamp: false }, { write: (line: string) => lines.push(line) });
  const stream = new PassThrough();
  forwardLines(stream, logger);
  const ended = new Promise<void>((resolve) => stream.on("end", resolve));
  return {
    stream,
    messages: async () => {
      await ended;
      return lines.map((line) => JSON.parse(line) as { msg: string; partial?: boolean });
    },
  };
}

describe("forwardLines", () => {
  it("logs one record per line across chunk boundaries and flushes the last partial line", async () => {
    const { stream, messages } = capture();
    stream.write("first li");
    stream.write("ne\nsecond\r\nthi");
    stream.end("rd");

    expect((await messages()).map((record) => record.msg)).toEqual(["first line", "second", "third"]);
  });

  it("keeps a multi-byte character split across chunks intact", async () => {
    const { stream, messages } = capture();
    const bytes = Buffer.from("héllo\n");
    stream.write(bytes.subarray(0, 2));
    stream.end(bytes.subarray(2));

    expect((await messages()).map((record) => record.msg)).toEqual(["héllo"]);
  });

  it("cuts output without newlines into bounded partial records", async () => {
    const { stream, messages } = capture();
    stream.end("x".repeat(maxLineChars * 2 + 10));

    const records = await messages();
    expect(records.map((record) => record.msg.length)).toEqual([maxLineChars, maxLineChars, 10]);
    expect(records.map((record) => record.partial)).toEqual([true, true, undefined]);
  });
});
