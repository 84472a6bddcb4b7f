// docs/signing.md, test/vectors/signing.json and the code must say the same thing:
// the §7 table is read from the markdown, and every vector, every field of the
// vector file and every (method, payload type, audience) the code signs with is
// checked against it.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Invocation } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { Command, Hello } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { controlPlaneAudience } from "../../services/identity/envelope-opener.js";
import { commandMethod, commandType } from "../../services/orchestrator/command-signer.js";
import { invocationType, invokeMethod } from "../../sidecar/inbound.js";
import { codeBlocks, codeSpans, firstTable, readDoc, section } from "../helpers/markdown.js";

interface VectorCase {
  name: string;
  usage: string;
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  payloadHex: string;
  canonicalHex: string;
}
const vectorFile = JSON.parse(readFileSync(new URL("../vectors/signing.json", import.meta.url), "utf8")) as Record<string, unknown> & {
  valid: Array<VectorCase & Record<string, unknown>>;
  invalid: Array<Record<string, unknown>>;
  keys: Record<string, Record<string, unknown>>;
};

const spec = readDoc("docs/signing.md");
const usageRows = firstTable(section(spec, "7. Where agentmesh uses envelopes")).map((row) => ({
  usage: codeSpans(row["signed field (`usage`)"] ?? "")[0] ?? "",
  signers: codeSpans(row.signer ?? ""),
  audiences: codeSpans(row.audience ?? "").filter((span) => span.startsWith("spiffe://")),
  method: codeSpans(row.method ?? "")[0] ?? "",
  payloadType: codeSpans(row["payload type"] ?? "")[0] ?? "",
}));

/** `spiffe://<td>/sidecar/<host>` → a pattern where each `<…>` is one path segment. */
function patternOf(template: string): RegExp {
  const escaped = template.split(/<[^>]+>/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${escaped.join("[A-Za-z0-9._-]+")}$`);
}
const matchesOne = (value: string, templates: string[]) => templates.some((template) => patternOf(template).test(value));

function rowFor(usage: string) {
  const row = usageRows.find((candidate) => candidate.usage === usage);
  if (!row) throw new Error(`docs/signing.md §7 has no row ${usage}`);
  return row;
}

const decoders: Record<string, (bytes: Uint8Array) => Uint8Array> = {
  "agentmesh.v1.RegisterRequest": (bytes) => RegisterRequest.encode(RegisterRequest.decode(bytes)).finish(),
  "agentmesh.v1.Hello": (bytes) => Hello.encode(Hello.decode(bytes)).finish(),
  "agentmesh.v1.Command": (bytes) => Command.encode(Command.decode(bytes)).finish(),
  "agentmesh.v1.Invocation": (bytes) => Invocation.encode(Invocation.decode(bytes)).finish(),
};

describe("docs/signing.md §7 and the vectors", () => {
  it("lists the four signed messages", () => {
    expect(usageRows.map((row) => row.usage)).toEqual(["RegisterRequest.envelope", "Hello.envelope", "Command.envelope", "CallFrame.envelope"]);
  });

  it.each(vectorFile.valid.filter((testCase) => testCase.usage !== "synthetic").map((testCase) => [testCase.name, testCase] as const))(
    "valid vector %s follows its §7 row",
    (_name, testCase) => {
      const row = rowFor(testCase.usage);
      expect({ method: testCase.method, payloadType: testCase.payloadType }).toEqual({ method: row.method, payloadType: row.payloadType });
      expect(matchesOne(testCase.signer, row.signers), `signer ${testCase.signer} vs ${row.signers.join(", ")}`).toBe(true);
      expect(matchesOne(testCase.audience, row.audiences), `audience ${testCase.audience} vs ${row.audiences.join(", ")}`).toBe(true);
      // The payload is a real encoding of its type: it decodes and encodes back to the same bytes.
      const payload = Buffer.from(testCase.payloadHex, "hex");
      const roundTrip = decoders[testCase.payloadType];
      expect(roundTrip, `no decoder for ${testCase.payloadType}`).toBeDefined();
      expect(Buffer.from(roundTrip?.(payload) ?? []).toString("hex")).toBe(testCase.payloadHex);
    },
  );

  it("covers every §7 row with at least one valid vector, and only one synthetic case", () => {
    const used = new Set(vectorFile.valid.map((testCase) => testCase.usage));
    for (const row of usageRows) expect(used).toContain(row.usage);
    expect(vectorFile.valid.filter((testCase) => testCase.usage === "synthetic")).toHaveLength(1);
  });

  it("matches what the server, the sidecar and the orchestrator sign with", () => {
    const register = rowFor("RegisterRequest.envelope");
    const hello = rowFor("Hello.envelope");
    const command = rowFor("Command.envelope");
    const call = rowFor("CallFrame.envelope");
    // The control plane's audience is exactly the documented one, with no replica id.
    expect(register.audiences).toEqual([controlPlaneAudience("<td>")]);
    expect(hello.audiences).toEqual([controlPlaneAudience("<td>")]);
    expect({ method: command.method, payloadType: command.payloadType }).toEqual({ method: commandMethod, payloadType: commandType });
    expect({ method: call.method, payloadType: call.payloadType }).toEqual({ method: invokeMethod, payloadType: invocationType });
  });
});

describe("docs/signing.md §2 and §6 and the vector file", () => {
  it("the worked example is the first valid vector's canonical bytes", () => {
    const example = codeBlocks(section(spec, "2. Canonical bytes")).at(-1)?.body ?? "";
    const hex = example
      .split("\n")
      .map((line) => line.trim().split(/\s+/).filter((word) => /^[0-9a-f]+$/.test(word)).join(""))
      .join("");
    const first = vectorFile.valid[0];
    expect(section(spec, "2. Canonical bytes")).toContain(`\`${first?.name}\``);
    expect(hex).toBe(first?.canonicalHex);
  });

  it("describes every field the file has", () => {
    const described = new Set(codeSpans(section(spec, "6. Test vectors")).flatMap((span) => span.split(/,\s*/)));
    const fields = new Set<string>([
      ...Object.keys(vectorFile),
      ...Object.values(vectorFile.keys).flatMap((key) => Object.keys(key)),
      ...vectorFile.valid.flatMap((testCase) => Object.keys(testCase)),
      ...vectorFile.invalid.flatMap((testCase) => Object.keys(testCase)),
      ...vectorFile.invalid.flatMap((testCase) => Object.keys(testCase.envelope as object)),
      ...vectorFile.invalid.flatMap((testCase) => Object.keys(testCase.expected as object)),
    ]);
    const missing = [...fields].filter((field) => !described.has(field));
    expect(missing).toEqual([]);
  });
});

describe("docs/signing.md §8 and test/vectors/frame-auth.json", () => {
  const frameVectors = JSON.parse(readFileSync(new URL("../vectors/frame-auth.json", import.meta.url), "utf8")) as Record<string, unknown> & {
    frames: Array<Record<string, unknown>>;
    invalid: Array<Record<string, unknown> & { frame: Record<string, unknown> }>;
    replyFrames: Array<Record<string, unknown> & { macInputHex: string }>;
    invalidReplies: Array<Record<string, unknown> & { frame: Record<string, unknown> }>;
  };

  it("the reply worked example of §8.5 is the first reply vector's MAC input", () => {
    const example = codeBlocks(section(spec, "8.5 Reply frames")).find((block) => block.body.startsWith("6167656e746d6573682d72706c2d7631"))?.body ?? "";
    const hex = example
      .split("\n")
      .map((line) => line.trim().split(/\s+/).filter((word) => /^[0-9a-f]+$/.test(word)).join(""))
      .join("");
    expect(hex).toBe(frameVectors.replyFrames[0]?.macInputHex);
  });

  it("§8.8 names every field the file has", () => {
    const described = new Set(codeSpans(section(spec, "8.8 Test vectors")).flatMap((span) => span.split(/,\s*/)));
    const fields = new Set<string>([
      ...Object.keys(frameVectors),
      ...[...frameVectors.invalid, ...frameVectors.invalidReplies].flatMap((testCase) => Object.keys(testCase)),
      ...[...frameVectors.frames, ...frameVectors.replyFrames].flatMap((frame) => Object.keys(frame)),
    ]);
    // Fields named after the wire fields they hold (CallFrame, SignedEnvelope), listed in §8.3 and §8.5.
    const wireFields = new Set(["sequence", "alg", "signer", "audience", "method", "payloadType", "issuedAtMs", "macSequence", "callId", "end", "refusedBeforeDelivery", "statusCode", "statusMessage", "contentType", "instanceId", "version"]);
    expect([...fields].filter((field) => !described.has(field) && !wireFields.has(field))).toEqual([]);
  });
});
