// With tracing off a sidecar must not load the OpenTelemetry SDK: only the OTLP tracer module
// imports it, and only call-tracer.ts reaches that module, by a dynamic import.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { tracerFromEnvironment } from "../../sidecar/observability/call-tracer.js";
import { repoRoot } from "../helpers/processes.js";

function sourceFiles(directory: string): string[] {
  return readdirSync(directory).flatMap((name) => {
    const path = join(directory, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith(".ts") ? [path] : [];
  });
}

describe("tracing is loaded lazily", () => {
  it("imports @opentelemetry statically only in the OTLP tracer, which nothing imports statically", () => {
    const files = ["sidecar", "sdk/ts/src", "cli"].flatMap((root) => sourceFiles(join(repoRoot, root)));
    const staticOtel = files.filter((file) => /^import[^;]*from\s+"@opentelemetry\//m.test(readFileSync(file, "utf8"))).map((file) => relative(repoRoot, file));
    expect(staticOtel).toEqual(["sidecar/observability/otlp-call-tracer.ts"]);
    const importers = files.filter((file) => /^(?:import|export)[^;]*from\s+"[^"]*otlp-call-tracer\.js"/m.test(readFileSync(file, "utf8")));
    expect(importers).toEqual([]);
  });

  it.each([
    [{}, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "" }, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_SDK_DISABLED: "true" }, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_TRACES_EXPORTER: "none" }, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }, true],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces" }, true],
  ])("tracer from %o: %s", async (env, on) => {
    const tracer = await tracerFromEnvironment(env, "test");
    expect(tracer !== undefined).toBe(on);
    await tracer?.close();
  });
});
