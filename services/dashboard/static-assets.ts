import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The page, its one ES module and its style sheet: shipped beside this module (the build copies them into dist/). */
const files = {
  "index.html": "text/html; charset=utf-8",
  "dashboard.js": "text/javascript; charset=utf-8",
  "dashboard.css": "text/css; charset=utf-8",
} as const;
export type AssetName = keyof typeof files;

interface Asset {
  body: Buffer;
  contentType: string;
  etag: string;
}

export const defaultAssetsDir = fileURLToPath(new URL("./assets/", import.meta.url));

/** Read once at start: three small files, served from memory. */
export class StaticAssets {
  private readonly assets = new Map<AssetName, Asset>();
  /** Why the assets could not be read (a broken install), if so. */
  readonly problem: string | undefined;

  constructor(directory: string = defaultAssetsDir) {
    let problem: string | undefined;
    for (const [name, contentType] of Object.entries(files) as Array<[AssetName, string]>) {
      try {
        const body = readFileSync(join(directory, name));
        this.assets.set(name, { body, contentType, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 16)}"` });
      } catch {
        problem ??= `dashboard asset ${name} not found in ${directory}`;
      }
    }
    this.problem = problem;
  }

  serve(name: AssetName, request: IncomingMessage, response: ServerResponse, headers: Record<string, string>): void {
    const asset = this.assets.get(name);
    if (!asset) {
      response.writeHead(503, { ...headers, "content-type": "text/plain; charset=utf-8" }).end("dashboard assets missing from this installation\n");
      return;
    }
    // Revalidated on every load (the files change with each release), answered 304 when unchanged.
    const cacheHeaders = { ...headers, "content-type": asset.contentType, etag: asset.etag, "cache-control": "no-cache" };
    if (request.headers["if-none-match"] === asset.etag) {
      response.writeHead(304, cacheHeaders).end();
      return;
    }
    response.writeHead(200, { ...cacheHeaders, "content-length": String(asset.body.length) });
    response.end(request.method === "HEAD" ? undefined : asset.body);
  }
}
