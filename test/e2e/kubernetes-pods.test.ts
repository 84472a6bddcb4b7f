// deploy/'s pods as processes (no cluster runs here): the server container's args, env
// and exec probe, and the agent pod's sidecar script, taken from the manifests and run
// from the image's /app, with their volumes as directories holding what the README's
// `kubectl create secret/configmap` lines put in them (made with the README's
// `ctl init-admin --create-ca` and `ctl join-token`). So the manifests' commands, the
// keys they read and the probes are what is tested; scheduling, Services and the
// kubelet are not (kubeconform checks their shape in test/unit/deploy-files.test.ts).
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { MeshCaller } from "../../sdk/ts/src/agent/invoke.js";
import { assembleImageApp, localize } from "../helpers/compose-file.js";
import { stopProcess, waitFor } from "../helpers/mesh-cluster.js";
import { type ThrowawayPostgres, startPostgres } from "../helpers/postgres.js";
import { type ManagedProcess, cliPath, repoRoot, run, startProcess, tempDir } from "../helpers/processes.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}
interface Container {
  command?: string[];
  args: string[];
  env: EnvVar[];
  workingDir?: string;
  readinessProbe: { exec: { command: string[] } };
  volumeMounts: Array<{ name: string; mountPath: string }>;
}
interface StatefulSet {
  kind: string;
  metadata: { name: string };
  spec: { template: { spec: { containers: Container[] } } };
}

const manifests = ["deploy/agentmesh-server.yaml", "deploy/agentmesh-agent.yaml"].flatMap((file) =>
  parseAllDocuments(readFileSync(join(repoRoot, file), "utf8")).map((document) => document.toJS() as StatefulSet),
);
const containerOf = (name: string) => {
  const [container] = manifests.find((manifest) => manifest.kind === "StatefulSet" && manifest.metadata.name === name)?.spec.template.spec.containers ?? [];
  if (!container) throw new Error(`no StatefulSet ${name} in deploy/`);
  return container;
};
const serverContainer = containerOf("agentmesh");
const sidecarContainer = containerOf("agentmesh-word-stats");
const agentPod = "agentmesh-word-stats-0";

let root: string;
let app: string;
let postgres: ThrowawayPostgres | undefined;
let redis: ThrowawayRedis | undefined;
const processes: ManagedProcess[] = [];
const callers: MeshCaller[] = [];
const pathEnv = { PATH: [join(repoRoot, ".tools", "bin"), dirname(process.execPath), process.env.PATH].join(":") };
let serverAddress = "";
let sidecarLocal = "";

/** A container's env as the kubelet gives it: values, the pod's fields, the Secret keys given here. */
function containerEnv(container: Container, fields: Record<string, string>, secrets: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env) {
    const field = variable.valueFrom?.fieldRef?.fieldPath;
    const secret = variable.valueFrom?.secretKeyRef;
    const value = variable.value ?? (field ? fields[field] : secret ? secrets[`${secret.name}/${secret.key}`] : undefined);
    if (value !== undefined) env[variable.name] = value;
  }
  return env;
}

/** The volume mounts as local directories. */
function mounts(container: Container, directories: Record<string, string>): Record<string, string> {
  return Object.fromEntries(container.volumeMounts.map((mount) => [mount.mountPath, directories[mount.name] ?? ""]));
}

/** The subject alternative names of the certificate a TLS server presents. */
function peerSubjectAltName(address: string): Promise<string> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => {
      resolve(socket.getPeerCertificate().subjectaltname ?? "");
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

beforeAll(async () => {
  root = tempDir("agentmesh-k8s-");
  app = join(root, "app");
  assembleImageApp(app);
}, 30_000);

afterAll(async () => {
  for (const caller of callers) caller.close();
  for (const managed of processes.splice(0).reverse()) await stopProcess(managed);
  await Promise.all([postgres?.destroy(), redis?.destroy()]);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("deploy/ pods, as processes", () => {
  it("the server pod starts on the CA Secret and passes its exec readiness probe", { timeout: 60_000 }, async () => {
    // README: agentmesh ctl init-admin --create-ca --data-dir ca --out admin, then the Secret from ca/*.pem.
    const created = await run(process.execPath, [cliPath, "ctl", "init-admin", "--create-ca", "--data-dir", join(root, "ca"), "--out", join(root, "admin")], 20_000);
    expect({ code: created.code, stderr: created.stderr }).toEqual({ code: 0, stderr: "" });
    const caSecret = join(root, "secret-agentmesh-ca");
    mkdirSync(caSecret);
    for (const key of ["ca-cert.pem", "ca-key.pem"]) copyFileSync(join(root, "ca", key), join(caSecret, key));

    [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
    const secrets = { "agentmesh-store/postgres-url": await postgres.createDatabase(), "agentmesh-store/redis-url": redis.url };
    const args = serverContainer.args;
    const paths = { "/app": app, ...mounts(serverContainer, { data: join(root, "agentmesh-0"), ca: caSecret }) };
    mkdirSync(join(root, "agentmesh-0"));
    const env = containerEnv(serverContainer, { "metadata.name": "agentmesh-0" }, secrets);
    const server = startProcess(
      process.execPath,
      [join(app, "bin", "agentmesh.js"), ...args.map((arg) => localize(arg, paths)), "--host", "127.0.0.1", "--http-host", "127.0.0.1", "--port", "0", "--http-port", "0"],
      env,
    );
    processes.push(server);
    const listening = await server.waitForLog((line) => line.msg === "listening", 20_000);
    serverAddress = String(listening.grpcAddress);
    // AGENTMESH_SERVER_ID from the pod name: the replica's SPIFFE ID in its certificate.
    expect(await peerSubjectAltName(serverAddress)).toContain("URI:spiffe://agentmesh.local/server/agentmesh-0");

    const [command = "", ...probeArgs] = serverContainer.readinessProbe.exec.command;
    const probe = await run(command, probeArgs.map((arg) => localize(arg, { ...paths, "127.0.0.1:7420": serverAddress })), 20_000, { env: pathEnv });
    expect({ code: probe.code, output: `${probe.stdout}${probe.stderr}`.trim() }).toEqual({ code: 0, output: "status: SERVING" });
  });

  it("the agent pod's sidecar joins with its token from the Secret and serves word-stats", { timeout: 60_000 }, async () => {
    // README: the join token for the pod's name, and the trust bundle ConfigMap from admin/ca.pem.
    const token = await run(process.execPath, [cliPath, "ctl", "--server", serverAddress, "--credentials-dir", join(root, "admin"), "join-token", "--host", agentPod, "--agents", "word-stats"], 20_000);
    expect({ code: token.code, stderr: token.stderr }).toEqual({ code: 0, stderr: "" });
    const [joinDir, trustDir] = [join(root, "secret-agentmesh-join-tokens"), join(root, "configmap-agentmesh-trust-bundle")];
    mkdirSync(joinDir);
    mkdirSync(trustDir);
    writeFileSync(join(joinDir, agentPod), (token.stdout.split("\n")[0] ?? "").trim());
    copyFileSync(join(root, "admin", "ca.pem"), join(trustDir, "ca.pem"));

    expect({ command: sidecarContainer.command, workingDir: sidecarContainer.workingDir, scripts: sidecarContainer.args.length }).toEqual({ command: ["/bin/sh", "-c"], workingDir: "/app", scripts: 1 });
    const paths = { "/app": app, "agentmesh:7420": serverAddress, ...mounts(sidecarContainer, { join: joinDir, trust: trustDir, data: join(root, "sidecar-data") }) };
    mkdirSync(join(root, "sidecar-data"));
    // The pod's ports become any free local ports (the last value of a flag wins), and the
    // advertised address the bound one instead of "$POD_IP:7430".
    const advertised = / --advertise-address "\$POD_IP:7430"/;
    expect(sidecarContainer.args[0]).toMatch(advertised);
    const script = `cd ${app} && ${localize(sidecarContainer.args[0] ?? "", paths).replace(advertised, "")} --inbound-host 127.0.0.1 --inbound-port 0 --local-port 0 --http-port 0`;
    const env = containerEnv(sidecarContainer, { "metadata.name": agentPod, "status.podIP": "127.0.0.1" }, {});
    const sidecar = startProcess("/bin/sh", ["-c", script], env);
    processes.push(sidecar);
    const listening = await sidecar.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    sidecarLocal = String(listening.localAddress);
    expect(listening.spiffeId).toBe(`spiffe://agentmesh.local/sidecar/${agentPod}`);

    const [command = "", ...probeArgs] = sidecarContainer.readinessProbe.exec.command;
    const probe = await run(command, probeArgs.map((arg) => localize(arg, { "127.0.0.1:7431": sidecarLocal })), 10_000, { env: pathEnv });
    expect({ code: probe.code, output: `${probe.stdout}${probe.stderr}`.trim() }).toEqual({ code: 0, output: "status: SERVING" });

    const caller = new MeshCaller(sidecarLocal);
    callers.push(caller);
    const reply = await waitFor("word-stats answering through the pod's sidecar", async () =>
      caller.invoke("text.word-stats", "to be or not to be", { timeoutMs: 5_000 }),
    );
    expect({ version: reply.version, words: (JSON.parse(reply.payload.toString()) as { words: number }).words }).toEqual({ version: "1.0.0", words: 6 });
    const listed = await run(process.execPath, [cliPath, "ctl", "--server", serverAddress, "--credentials-dir", join(root, "admin"), "-o", "json", "agents", "--name", "word-stats"], 20_000);
    expect((JSON.parse(listed.stdout) as Array<{ host: string; state: string }>).map((instance) => [instance.host, instance.state])).toEqual([[agentPod, "HEALTH_STATE_READY"]]);
  });
});
