import { type IncomingMessage, type Server as HttpServer, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry as PromRegistry } from "prom-client";

export interface HttpEndpointsOptions {
  host: string;
  port: number;
  metrics: PromRegistry;
  /** Live: the process can answer. */
  isLive(): boolean;
  /** Ready: serving gRPC and not shutting down. */
  isReady(): boolean;
  /** More routes on the same port (the dashboard): true when it answered the request. */
  routes?: (request: IncomingMessage, response: ServerResponse) => boolean;
}

/** `/metrics`, `/healthz` and `/readyz` on their own port, as Kubernetes and Prometheus expect. */
export async function startHttpEndpoints(options: HttpEndpointsOptions): Promise<{ server: HttpServer; port: number }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/metrics") {
      options.metrics.metrics().then(
        (text) => response.writeHead(200, { "content-type": options.metrics.contentType }).end(text),
        () => response.writeHead(500).end("metrics unavailable\n"),
      );
      return;
    }
    if (path === "/healthz") {
      const live = options.isLive();
      response.writeHead(live ? 200 : 503, { "content-type": "text/plain" }).end(live ? "ok\n" : "not live\n");
      return;
    }
    if (path === "/readyz") {
      const ready = options.isReady();
      response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n");
      return;
    }
    if (options.routes?.(request, response)) return;
    response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
