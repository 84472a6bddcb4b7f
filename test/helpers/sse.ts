// A server-sent-events reader for tests: collects every event of one
// text/event-stream response and waits for the ones a test expects.
import { type ClientRequest, type IncomingMessage, request } from "node:http";

export interface SseEvent {
  event: string;
  data: unknown;
}

export interface SseStream {
  status: number;
  /** The body, for a response that is not an event stream (a 401, say). */
  body: string;
  headers: IncomingMessage["headers"];
  events: SseEvent[];
  /** The first event at index `fromIndex` or later matching `predicate`. */
  next(predicate: (event: SseEvent) => boolean, fromIndex?: number, timeoutMs?: number): Promise<SseEvent>;
  /** Resolves once the server ended the stream. */
  ended: Promise<void>;
  close(): void;
}

export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    const waiters = new Set<() => void>();
    const outgoing: ClientRequest = request(url, { headers: { accept: "text/event-stream", ...headers } }, (response) => {
      let buffered = "";
      let body = "";
      let endedResolve: () => void = () => undefined;
      const ended = new Promise<void>((resolveEnded) => {
        endedResolve = resolveEnded;
      });
      response.setEncoding("utf8");
      const isStream = String(response.headers["content-type"] ?? "").startsWith("text/event-stream");
      response.on("data", (chunk: string) => {
        if (!isStream) {
          body += chunk;
          return;
        }
        buffered += chunk;
        let boundary = buffered.indexOf("\n\n");
        while (boundary !== -1) {
          const block = buffered.slice(0, boundary);
          buffered = buffered.slice(boundary + 2);
          boundary = buffered.indexOf("\n\n");
          let event = "message";
          const data: string[] = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          if (data.length > 0) events.push({ event, data: JSON.parse(data.join("\n")) as unknown });
        }
        for (const waiter of [...waiters]) waiter();
      });
      let hasEnded = false;
      const finish = () => {
        hasEnded = true;
        endedResolve();
        for (const waiter of [...waiters]) waiter();
      };
      response.on("end", finish);
      response.on("close", finish);
      const stream: SseStream = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        get body() {
          return body;
        },
        events,
        ended,
        next: (predicate, fromIndex = 0, timeoutMs = 10_000) =>
          new Promise((resolveEvent, rejectEvent) => {
            const check = () => {
              const found = events.slice(fromIndex).find(predicate);
              if (found) {
                cleanup();
                resolveEvent(found);
              } else if (hasEnded) {
                cleanup();
                rejectEvent(new Error(`stream ended without the event; got ${events.map((item) => item.event).join(", ")}`));
              }
            };
            const timer = setTimeout(() => {
              cleanup();
              rejectEvent(new Error(`event not seen within ${timeoutMs} ms; got ${events.map((item) => item.event).join(", ")}`));
            }, timeoutMs);
            const cleanup = () => {
              clearTimeout(timer);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          }),
        close: () => outgoing.destroy(),
      };
      if (isStream) resolve(stream);
      else response.on("end", () => resolve(stream));
    });
    outgoing.on("error", reject);
    outgoing.end();
  });
}
